"""The wheel installs into a fresh virtual environment and the command works there."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.support.helpers import REPO


def test_wheel_installs_into_a_fresh_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("cachewatch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "cachewatch/engine/cache/cache.py" in names and "cachewatch/tui/cli.py" in names
    assert not any(n.startswith(("tests/", "engine/", "tui/")) for n in names), "sources must install under cachewatch/"
    assert any(n.endswith(".data/data/share/cachewatch/examples/train_cached.py") for n in names), "the demo's training"
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "cachewatch = cachewatch.engine.cli:main" in scripts, "the command line belongs to the engine"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    out = subprocess.run([str(venv / "bin" / "cachewatch"), "--version"], capture_output=True, text=True, check=True)
    import cachewatch.engine

    assert out.stdout.strip() == f"cachewatch {cachewatch.engine.__version__}"
    # The dashboard's subcommands are there, registered by the installed dashboard.
    out = subprocess.run([str(venv / "bin" / "cachewatch"), "--help"], capture_output=True, text=True, check=True)
    assert "    attach " in out.stdout and "    demo " in out.stdout
    # And the engine works from the installed copy, not from this checkout.
    # The demo finds its training in the installed copy, not only in a checkout.
    code = "from cachewatch.tui.demo import example_script; print(example_script())"
    found = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert found.stdout.strip().startswith(str(venv))
    code = "import cachewatch.engine, sys; print(cachewatch.engine.__file__)"
    where = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert str(venv) in where.stdout
