"""The private socket directory, engine names and the registry of running engines."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cachewatch.engine.daemon import runtime
from cachewatch.engine.daemon.errors import EngineError, EngineNameTaken, NoEngine, RuntimeDirError


def test_runtime_dir_is_created_private(tmp_path: Path) -> None:
    base = tmp_path / "xdg"
    base.mkdir()
    old = os.umask(0o022)
    try:
        path = runtime.runtime_dir({"XDG_RUNTIME_DIR": str(base)})
    finally:
        os.umask(old)
    assert path == base / "cachewatch"
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()


def test_fallback_without_xdg_runtime_dir_is_per_user() -> None:
    path = runtime.runtime_dir({}, create=False)
    assert path == Path(f"/tmp/cachewatch-{os.getuid()}")


def test_a_directory_open_to_others_is_refused_not_fixed(tmp_path: Path) -> None:
    d = tmp_path / "cachewatch"
    d.mkdir()
    d.chmod(0o755)
    with pytest.raises(RuntimeDirError, match=r"mode 0755, open to other users; run `chmod 700"):
        runtime.runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path)})
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o755  # left as found


def test_a_directory_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    # Needs root to chown (CI runs as root, like the tmpfs tests).
    d = tmp_path / "cachewatch"
    d.mkdir(mode=0o700)
    os.chown(d, 65534, 65534)
    with pytest.raises(RuntimeDirError, match="belongs to uid 65534, not to you"):
        runtime.runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path)})


def test_a_symlink_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (tmp_path / "cachewatch").symlink_to(target)
    with pytest.raises(RuntimeDirError, match="is not a directory"):
        runtime.runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path)})


def test_socket_path_too_long_names_the_fix(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 90)
    with pytest.raises(RuntimeDirError, match="longer than 107 bytes.*set XDG_RUNTIME_DIR to a shorter directory"):
        runtime.socket_path("train", deep)


@pytest.mark.parametrize("name", ["", "-x", "a/b", "a b", "x" * 65, "../up"])
def test_bad_engine_names_are_refused(name: str) -> None:
    with pytest.raises(EngineError, match="is not usable"):
        runtime.check_engine_name(name)


def test_default_names_come_from_the_config_or_the_script(tmp_path: Path) -> None:
    cfg = tmp_path / "proj" / "cachewatch.toml"
    a = runtime.default_engine_name(cfg)
    assert a.startswith("proj-") and a == runtime.default_engine_name(cfg)  # stable
    assert runtime.default_engine_name(tmp_path / "other" / "proj" / "cachewatch.toml") != a  # same dir name, other project
    assert runtime.default_engine_name(None, ["python", "-u", "train_resnet.py", "--epochs", "3"]) == "train_resnet"
    assert runtime.default_engine_name(None, ["/usr/bin/python3.11", "scripts/fit.py"]) == "fit"
    assert runtime.default_engine_name(None, []) == "engine"


def test_a_name_belongs_to_one_live_process(tmp_path: Path) -> None:
    rdir = runtime.ensure_private_dir(tmp_path / "rt")
    lock = runtime.claim_name("train", rdir)
    try:
        # Another process cannot take it while we hold it.
        code = ("import sys; from pathlib import Path; from cachewatch.engine.daemon import runtime\n"
                "try:\n    runtime.claim_name('train', Path(sys.argv[1]))\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
        out = subprocess.run([sys.executable, "-c", code, str(rdir)], capture_output=True, text=True, timeout=60)
        assert out.stdout.startswith("EngineNameTaken an engine named 'train' is already running")
    finally:
        lock.release()
    runtime.claim_name("train", rdir).release()  # free again once released


def test_ls_removes_what_a_dead_engine_left(tmp_path: Path) -> None:
    rdir = runtime.ensure_private_dir(tmp_path / "rt")
    # A kill -9'd engine leaves its lock file, socket file and info file; nobody holds the lock.
    (rdir / "ghost.lock").write_text("")
    entry = runtime.EngineEntry(name="ghost", pid=999999, socket=str(rdir / "ghost.sock"), started=0.0, protocol="1.0", version="x")
    (rdir / "ghost.json").write_text(json.dumps(entry.to_json()))
    import socket

    s = socket.socket(socket.AF_UNIX)
    s.bind(str(rdir / "ghost.sock"))  # bound, never listening: connect is refused
    s.close()
    assert runtime.list_engines(rdir) == []
    assert sorted(p.name for p in rdir.iterdir()) == []
    with pytest.raises(NoEngine, match="no engine is running"):
        runtime.find_engine(None, rdir)


def test_find_engine_names_the_choices(tmp_path: Path) -> None:
    rdir = runtime.ensure_private_dir(tmp_path / "rt")
    locks = []
    try:
        for name in ("a", "b"):
            lock = runtime.claim_name(name, rdir)
            lock.publish(runtime.EngineEntry(name=name, pid=os.getpid(), socket=str(lock.socket_path), started=0.0,
                                             protocol="1.0", version="x"))
            locks.append(lock)
        with pytest.raises(NoEngine, match=r"2 engines are running \(a, b\); name the one you mean"):
            runtime.find_engine(None, rdir)
        with pytest.raises(NoEngine, match=r"no engine named 'c' is running \(running: a, b\)"):
            runtime.find_engine("c", rdir)
        assert runtime.find_engine("b", rdir).name == "b"
    finally:
        for lock in locks:
            lock.release()
    assert isinstance(EngineNameTaken("x"), EngineError)
