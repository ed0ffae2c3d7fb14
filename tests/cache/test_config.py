"""cachewatch.toml: lookup, environment overrides, and one-line errors naming the key and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from cachewatch.engine import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cachewatch.toml"
    p.write_text(text)
    return p


def test_found_in_working_directory_and_paths_relative_to_the_file(tmp_path, monkeypatch) -> None:
    write(tmp_path, '[cache]\nroot = "cache/tusz"\nmax_size = "100GB"\n')
    sub = tmp_path / "somewhere" / "else"
    sub.mkdir(parents=True)
    cfg = load_config(tmp_path / "cachewatch.toml")
    # seed 004: the cache directory must not depend on where the training is started from
    assert cfg.cache.root == tmp_path / "cache/tusz"
    monkeypatch.chdir(tmp_path)
    assert load_config().cache.root == tmp_path / "cache/tusz"
    assert load_config().cache.max_size == 100 * 10**9


def test_defaults_without_a_file(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config()
    assert cfg.path is None and cfg.cache.root is None and cfg.cache.target_ratio == 0.9
    assert cfg.run.restart == "never" and cfg.monitor.memory_alert == 0.85


def test_environment_overrides(tmp_path, monkeypatch) -> None:
    p = write(tmp_path, '[cache]\nroot = "/data/c"\nmax_size = "100GB"\n[run]\nrestart = "never"\n')
    monkeypatch.setenv("CACHEWATCH_CACHE_MAX_SIZE", "64MiB")
    monkeypatch.setenv("CACHEWATCH_RUN_RESTART", "on-failure")
    monkeypatch.setenv("CACHEWATCH_RUN_MAX_RESTARTS", "5")
    cfg = load_config(p)
    assert cfg.cache.max_size == 64 * 2**20
    assert cfg.run.restart == "on-failure" and cfg.run.max_restarts == 5
    assert cfg.cache.root == Path("/data/c")


def test_config_file_from_environment(tmp_path, monkeypatch) -> None:
    p = write(tmp_path, '[cache]\nmax_size = "1GB"\n')
    monkeypatch.setenv("CACHEWATCH_CONFIG", str(p))
    monkeypatch.chdir("/")
    assert load_config().cache.max_size == 10**9


@pytest.mark.parametrize(
    "text, fragments",
    [
        ('[cache]\nmax_size = "100GB"\ntarget_size = "120GB"\n', ["target_size", "above max_size"]),
        ('[cache]\nmax_size = "-5GB"\n', ["[cache] max_size", "'-5GB'", "negative"]),
        ('[cache]\nmax_size = "100XB"\n', ["[cache] max_size", "'100XB'", "unknown unit"]),
        ('[cache]\nmax_size = 0\n', ["max_size = 0"]),
        ('[cache]\ntarget_ratio = 1.5\n', ["[cache] target_ratio", "1.5"]),
        ('[cache]\nmaxsize = "1GB"\n', ["unknown key [cache] 'maxsize'", "max_size"]),
        ('[caches]\n', ["unknown section [caches]"]),
        ('[run]\nrestart = "always"\n', ["[run] restart", "'always'", "on-failure"]),
        ('[run]\nmax_restarts = -1\n', ["[run] max_restarts", "at least 0"]),
        ('[source]\ntransform = "mypkg.fn"\n', ["module:function"]),
        ('[cache\nroot=1', ["not valid TOML"]),
        ('[[watch]]\nroot = "/x"\n', ["[[watch]] needs max_size"]),
    ],
)
def test_bad_values_get_one_line_naming_key_and_value(tmp_path, text, fragments) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    msg = str(exc.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg


def test_cache_root_that_is_a_file(tmp_path) -> None:
    (tmp_path / "afile").write_text("x")
    p = write(tmp_path, '[cache]\nroot = "afile"\nmax_size = "1GB"\n')
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        load_config(p)


def test_bad_environment_override_names_the_variable(tmp_path, monkeypatch) -> None:
    p = write(tmp_path, "")
    monkeypatch.setenv("CACHEWATCH_CACHE_MAX_SIZE", "big")
    with pytest.raises(ConfigError, match="CACHEWATCH_CACHE_MAX_SIZE"):
        load_config(p)
    monkeypatch.delenv("CACHEWATCH_CACHE_MAX_SIZE")
    monkeypatch.setenv("CACHEWATCH_CACHE_MAXSIZE", "1GB")
    with pytest.raises(ConfigError, match="CACHEWATCH_CACHE_MAXSIZE: no such setting"):
        load_config(p)


def test_missing_explicit_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")


def test_watch_entries(tmp_path) -> None:
    p = write(
        tmp_path,
        '[[watch]]\nroot = "img"\nmax_size = "100GB"\ninclude = "*.jpg"\n'
        '[[watch]]\nroot = "/abs"\nmax_size = "1TB"\ntarget_ratio = 0.8\n',
    )
    cfg = load_config(p)
    assert [w.root for w in cfg.watch] == [tmp_path / "img", Path("/abs")]
    assert cfg.watch[0].include == ("*.jpg",) and cfg.watch[1].target_ratio == 0.8  # one glob or a list: a tuple


def test_the_example_config_is_valid_and_says_what_the_docs_say() -> None:
    from tests.helpers import REPO

    cfg = load_config(REPO / "examples" / "cachewatch.toml")
    assert cfg.cache.max_size == 100 * 10**9 and cfg.cache.root == REPO / "examples" / "cache/tusz"
    assert cfg.run.preflight == "require" and cfg.run.backoff_max == 300
    assert cfg.dashboard.keys == {"evict": "E"}
    assert cfg.watch[0].include == ("*.jpg",) and cfg.metrics.port == 0
