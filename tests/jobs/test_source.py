"""The configured source: items, keys from the template, collisions and empty sources as errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from cachewatch.engine import load_config
from cachewatch.engine.jobs import SourceError, SourceSpec, load_transform


def tree(root: Path, *rels: str) -> Path:
    for r in rels:
        p = root / r
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(r.encode())
    return root


def test_keys_follow_the_template_fields(tmp_path: Path) -> None:
    src = tree(tmp_path / "edf", "train/aa/s005_t009.edf", "train/ab/s001_t001.edf", "notes.txt")
    spec = SourceSpec(dir=src, glob="**/*.edf", key="{stem}_windows.npz")  # seed 004's cache layout
    assert [(i.relpath, i.key) for i in spec.items()] == [
        ("train/aa/s005_t009.edf", "s005_t009_windows.npz"),
        ("train/ab/s001_t001.edf", "s001_t001_windows.npz"),
    ]
    spec = SourceSpec(dir=src, glob="**/*.edf", key="v2/{relpath}{suffix}")
    assert spec.items()[0].key == "v2/train/aa/s005_t009.edf.edf"
    assert spec.items()[0].size_bytes == len(b"train/aa/s005_t009.edf")


def test_two_items_on_one_key_is_an_error_not_an_overwrite(tmp_path: Path) -> None:
    src = tree(tmp_path / "d", "a/x.edf", "b/x.edf")
    with pytest.raises(SourceError, match=r"'a/x.edf' and 'b/x.edf' both map to key 'x'.*\{relpath\}"):
        SourceSpec(dir=src, glob="**/*.edf", key="{stem}").items()


def test_unknown_template_field_names_the_known_ones(tmp_path: Path) -> None:
    src = tree(tmp_path / "d", "a.edf")
    with pytest.raises(SourceError, match=r"unknown field \{path\}; known fields: \{relpath\}"):
        SourceSpec(dir=src, key="{path}").items()
    with pytest.raises(SourceError, match="uses no field"):
        SourceSpec(dir=src, key="constant").items()


def test_a_source_that_matches_nothing_is_an_error(tmp_path: Path) -> None:
    src = tree(tmp_path / "d", "a.txt")
    with pytest.raises(SourceError, match=r"matches no files; check \[source\] dir and glob"):
        SourceSpec(dir=src, glob="**/*.edf").items()
    with pytest.raises(SourceError, match="does not exist"):
        SourceSpec(dir=tmp_path / "missing").items()
    with pytest.raises(SourceError, match="no source data configured"):
        SourceSpec().items()


def test_a_listing_names_items_relative_to_dir_or_itself(tmp_path: Path) -> None:
    src = tree(tmp_path / "d", "a/1.edf", "b/2.edf")
    listing = tmp_path / "files.txt"
    listing.write_text(f"# chosen recordings\nd/a/1.edf\n\n{src / 'b' / '2.edf'}\n")
    items = SourceSpec(listing=listing).items()
    assert [i.relpath for i in items] == ["d/a/1.edf", "d/b/2.edf"]
    listing.write_text("d/a/1.edf\nd/nope.edf\n")
    with pytest.raises(SourceError, match=r"line 2: 'd/nope.edf' is not a file"):
        SourceSpec(listing=listing).items()


def test_from_config_resolves_against_the_config_file(tmp_path: Path) -> None:
    tree(tmp_path / "data", "x.edf")
    (tmp_path / "cachewatch.toml").write_text('[source]\ndir = "data"\nglob = "*.edf"\ntransform = "prep.py:go"\n')
    spec = SourceSpec.from_config(load_config(tmp_path / "cachewatch.toml"))
    assert spec.dir == tmp_path / "data" and spec.base_dir == tmp_path
    (tmp_path / "prep.py").write_text("def go(path):\n    return b'ok:' + path.read_bytes()\n")
    fn = load_transform(spec.transform, spec.base_dir)
    assert fn(spec.items()[0].path) == b"ok:x.edf"


def test_transform_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="must be 'module:function'"):
        load_transform("just_a_module")
    with pytest.raises(SourceError, match=r"importing 'no_such_mod_q' failed \(ModuleNotFoundError"):
        load_transform("no_such_mod_q:f")
    (tmp_path / "m.py").write_text("x = 1\n")
    with pytest.raises(SourceError, match="has no function 'f'"):
        load_transform("m.py:f", tmp_path)
