"""Include/exclude globs: what counts under a watched root."""

from __future__ import annotations

from pathlib import Path

import pytest

from cachewatch.engine.config import load_config
from cachewatch.engine.errors import ConfigError
from cachewatch.engine.watch.filters import PathFilter


def test_name_patterns_match_at_any_depth() -> None:
    f = PathFilter(include=("*.jpg",))
    assert f.counts("a.jpg")
    assert f.counts("ab/cd/a.jpg")
    assert not f.counts("ab/cd/a.png")
    assert not f.counts("a.jpg/x.txt")  # the name is what matters, not a directory called *.jpg


def test_path_patterns_with_double_star_and_trailing_slash() -> None:
    f = PathFilter(include=("images/**/*.jpg",), exclude=("tmp/", "*.part"))
    assert f.counts("images/a.jpg")
    assert f.counts("images/x/y/a.jpg")
    assert not f.counts("other/a.jpg")
    g = PathFilter(exclude=("tmp/", "*.part"))
    assert not g.counts("tmp/a")
    assert not g.counts("tmp/b/c")
    assert g.counts("tmpx/a")
    assert not g.counts("x/y.part")
    assert g.counts("x/y.parts")


def test_star_does_not_cross_directories_and_classes_work() -> None:
    f = PathFilter(include=("a/*.bin", "[0-9][0-9]/?.npy", "[!x]*.pt"))
    assert f.counts("a/b.bin") and not f.counts("a/b/c.bin")
    assert f.counts("07/k.npy") and not f.counts("7/k.npy") and not f.counts("07/kk.npy")
    assert f.counts("m.pt") and not f.counts("x.pt")


def test_no_patterns_counts_everything() -> None:
    assert PathFilter().is_trivial
    assert PathFilter().counts("anything/at/all")


@pytest.mark.parametrize("bad", ["", "  ", "[abc"])
def test_bad_glob_is_a_clear_error(bad: str) -> None:
    with pytest.raises(ConfigError) as e:
        PathFilter(include=(bad,))
    assert repr(bad.strip()) in str(e.value) or repr(bad) in str(e.value)


def test_config_takes_a_glob_or_a_list_and_names_a_bad_one(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    cfg_file = tmp_path / "cachewatch.toml"
    cfg_file.write_text(
        "[[watch]]\nroot = 'c'\nmax_size = '1GB'\ninclude = ['*.jpg', '*.png']\nexclude = '*.part'\nstate_dir = 'st'\n"
    )
    cfg = load_config(cfg_file)
    w = cfg.watch[0]
    assert w.include == ("*.jpg", "*.png") and w.exclude == ("*.part",)
    assert w.root == tmp_path / "c" and w.state_dir == tmp_path / "st"
    cfg_file.write_text("[[watch]]\nroot = 'c'\nmax_size = '1GB'\ninclude = ['[oops']\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg_file)
    assert "[watch] include" in str(e.value) and "'[oops'" in str(e.value)
