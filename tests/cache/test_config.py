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
    from tests.support.helpers import REPO

    cfg = load_config(REPO / "examples" / "cachewatch.toml")
    assert cfg.cache.max_size == 100 * 10**9 and cfg.cache.root == REPO / "examples" / "cache/tusz"
    assert cfg.run.preflight == "require" and cfg.run.backoff_max == 300
    assert cfg.dashboard.keys == {"evict": "E"}
    assert cfg.watch[0].include == ("*.jpg",) and cfg.metrics.port == 0


# --- issue 9 item 7: every config value either loads sane or gives one line naming the key ------

import dataclasses
import json
import math
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cachewatch.engine.config import _SECTIONS, PORT_MAX
from cachewatch.engine.sizes import MAX_SIZE_BYTES
from tests.support.helpers import run_cli

_KEYS = [(sec, f.name) for sec, cls in _SECTIONS.items() for f in dataclasses.fields(cls)]


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{ " + ", ".join(f"{_toml_str(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"


def _toml_str(v: str) -> str:
    # JSON string escapes are TOML basic-string escapes (raw non-ASCII: TOML refuses surrogate escapes)
    return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
_tricky_text = st.one_of(
    _text,
    st.sampled_from(["0s", "0", "1e300PB", "1e308", "inf", "nan", "-1", "70000", "65536", "a\x00b", "1h30m", "90%",
                     "100GB", "64MiB", "9" * 400 + "w", "1e400", "  ", "off", "none", "true", "on-failure", "warn",
                     "127.0.0.1", "mod:fn", "*.jpg", "2**63"]),
    st.builds(lambda n, u: f"{n}{u}", st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["", "s", "ms", "h", "d", "PB", "GB", "KiB"])),
)
_scalar = st.one_of(
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    _tricky_text,
)
_value = st.one_of(_scalar, st.lists(_scalar, max_size=3), st.dictionaries(_text, _scalar, max_size=2))


def _assert_sane(cfg) -> None:
    """What every loaded config promises to the code that uses it."""
    for sec, cls in _SECTIONS.items():
        section = getattr(cfg, sec)
        for f in dataclasses.fields(cls):
            v = getattr(section, f.name)
            if isinstance(v, float):
                assert math.isfinite(v) and 0 <= v <= 3650 * 86400, (sec, f.name, v)
            elif isinstance(v, int) and not isinstance(v, bool):
                assert 0 <= v <= MAX_SIZE_BYTES, (sec, f.name, v)
            elif isinstance(v, (str, Path)):
                assert "\x00" not in str(v), (sec, f.name)
            elif isinstance(v, tuple):
                assert all("\x00" not in a for a in v), (sec, f.name)
    assert 0 <= cfg.metrics.port <= PORT_MAX
    assert 0.05 <= cfg.monitor.interval <= 3600 and 0 <= cfg.run.stop_grace <= 3600
    assert cfg.dashboard.refresh >= 0.05


def _one_line_naming(exc: ConfigError, *names: str) -> None:
    msg = str(exc)
    assert "\n" not in msg and msg.strip() == msg and len(msg) < 400, msg
    assert any(n in msg for n in names), (names, msg)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(_KEYS), value=_value)
def test_any_file_value_loads_sane_or_is_one_line_naming_the_key(tmp_path, key, value) -> None:
    sec, name = key
    p = write(tmp_path, f"[{sec}]\n{name} = {_toml_value(value)}\n")
    try:
        cfg = load_config(p, env={})
    except ConfigError as exc:
        # Cross-checks name the other key too (backoff_max vs backoff, target_size vs max_size).
        _one_line_naming(exc, f"[{sec}] {name}", name)
        assert str(p) in str(exc)  # and the file it came from
    else:
        _assert_sane(cfg)


_env_name = st.one_of(
    st.sampled_from([f"CACHEWATCH_{s.upper()}_{k.upper()}" for s, k in _KEYS]),
    st.builds(lambda s, k: f"CACHEWATCH_{s}_{k}", st.sampled_from(["CAHCE", "CACHES", "RUNS", "MONITR", "WATCH", "X"]),
              st.sampled_from([k.upper() for _, k in _KEYS])),
    st.builds(lambda s, k: f"CACHEWATCH_{s.upper()}_{k}", st.sampled_from(list(_SECTIONS)),
              st.text(string.ascii_uppercase + "_", min_size=1, max_size=12)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=_env_name, value=_tricky_text.filter(lambda v: "\x00" not in v))  # the OS allows no NUL in the environment
def test_any_environment_override_loads_sane_or_is_one_line_naming_the_variable(tmp_path, name, value) -> None:
    p = write(tmp_path, "")
    try:
        cfg = load_config(p, env={name: value})
    except ConfigError as exc:
        _one_line_naming(exc, name, name.split("_", 2)[2].lower())
    else:
        _assert_sane(cfg)
        assert name in {f"CACHEWATCH_{s.upper()}_{k.upper()}" for s, k in _KEYS}  # a typo never loads


def test_a_typo_in_the_section_of_a_variable_is_an_error_like_one_in_the_key(tmp_path) -> None:
    p = write(tmp_path, "")
    with pytest.raises(ConfigError, match=r"CACHEWATCH_CAHCE_MAX_SIZE: no such setting.*CACHEWATCH_CACHE_MAX_SIZE"):
        load_config(p, env={"CACHEWATCH_CAHCE_MAX_SIZE": "1GB"})
    # What the engine hands its training is not a setting, and loads.
    load_config(p, env={"CACHEWATCH_ENGINE": "x", "CACHEWATCH_PROGRESS_FILE": "/tmp/p", "CACHEWATCH_RUN_ID": "r"})


BAD_FILES = {
    "huge size": ('[cache]\nroot = "c"\nmax_size = "1e300PB"\n', "[cache] max_size"),
    "port": ("[metrics]\nport = 70000\n", "[metrics] port"),
    "nul in path": ('[cache]\nroot = "a\\u0000b"\nmax_size = "1GB"\n', "[cache] root"),
    "zero interval": ('[monitor]\ninterval = "0s"\n', "[monitor] interval"),
    "endless grace": ("[run]\nstop_grace = 1e308\n", "[run] stop_grace"),
    "not utf-8": (b'[cache]\nroot = "\xff\xfe"\n', "not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_config_is_one_line_and_exit_2_at_the_command_line(tmp_path, case) -> None:
    text, fragment = BAD_FILES[case]
    p = tmp_path / "cachewatch.toml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    out = run_cli("--config", str(p), "cache", "stats", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cachewatch: ") and fragment in lines[0], out.stderr
    assert str(p) in lines[0]


@pytest.mark.parametrize("argv", [("cache", "stats"), ("verify",), ("watch", "--once"), ("run", "--headless", "--", "sleep", "30")])
def test_an_overflowing_max_size_is_one_line_in_every_command(tmp_path, argv) -> None:
    p = write(tmp_path, '[cache]\nroot = "c"\nmax_size = "1e300PB"\n[[watch]]\nroot = "w"\nmax_size = "1e300PB"\n')
    out = run_cli("--config", str(p), *argv, cwd=tmp_path, env={"XDG_STATE_HOME": str(tmp_path / "state")})
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "max_size" in out.stderr and "too large" in out.stderr
    assert not (tmp_path / "state").exists()  # nothing was started
