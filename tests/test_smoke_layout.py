"""The package layout the users asked for, and the engine's independence from Textual."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cachewatch.engine import Cache, load_config
from tests.support.engine import EngineEnv


def test_engine_never_imports_textual() -> None:
    # A fresh interpreter: import everything public in the engine, then look at sys.modules.
    code = (
        "import sys, importlib, pkgutil, json\n"
        "import cachewatch.engine as e\n"
        "for m in pkgutil.walk_packages(e.__path__, 'cachewatch.engine.'):\n"
        "    if m.name.endswith('__main__'): continue\n"
        "    importlib.import_module(m.name)\n"
        "print(json.dumps(sorted(n for n in sys.modules if n == 'textual' or n.startswith(('textual.', 'cachewatch.tui')))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


# Runs the real command line (the console script's main) in a fresh interpreter, then says
# which Textual modules that command loaded.
_CLI_THEN_MODULES = (
    "import json, sys\n"
    "from cachewatch.engine.cli import main\n"
    "try:\n"
    "    code = main(sys.argv[1:])\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "sys.stdout.flush()\n"
    "print('\\nMODULES ' + json.dumps(sorted(n for n in sys.modules if n == 'textual' or n.startswith('textual.'))))\n"
    "print('CODE', code)\n"
)


def _headless(*args: str, cwd: Path | None = None) -> tuple[list[str], int, str]:
    out = subprocess.run([sys.executable, "-c", _CLI_THEN_MODULES, *args], capture_output=True, text=True, cwd=cwd,
                         timeout=120)
    assert "MODULES " in out.stdout, out.stderr
    tail = out.stdout.rsplit("MODULES ", 1)[1].splitlines()
    return json.loads(tail[0]), int(tail[1].split()[1]), out.stdout + out.stderr


@pytest.mark.parametrize("args", [
    ("--help",), ("run", "--help"), ("ls",), ("status",), ("cache", "stats"), ("monitor",), ("run", "--headless"),
])
def test_headless_commands_import_no_textual(engine_env: EngineEnv, args: tuple[str, ...]) -> None:
    # Headless commands must start fast and work where Textual cannot (no terminal, a server):
    # the dashboard is a front end loaded for its subcommands, Textual only when a screen opens.
    cfg = engine_env.tmp / "cachewatch.toml"
    cfg.write_text("[cache]\nroot = 'cache'\nmax_size = '1MB'\n[run]\ncommand = ['sleep', '30']\nname = 'quiet'\n")
    with Cache.from_config(load_config(cfg)) as cache:
        cache.put("k", b"v")
    modules, code, output = _headless(*args, cwd=engine_env.tmp)
    assert modules == [], f"cachewatch {' '.join(args)} imported {modules[:5]}"
    assert code in (0, 3), output  # 3: `status` with no engine running
    if args == ("run", "--headless"):
        assert "engine quiet started" in output


def test_python_m_engine_cli_is_the_command_line() -> None:
    import cachewatch.engine

    out = subprocess.run([sys.executable, "-m", "cachewatch.engine.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    # The engine's commands and the dashboard's, registered by the dashboard itself.
    for command in ("run", "status", "cache", "attach", "demo"):
        assert f"    {command} " in out.stdout
    out = subprocess.run([sys.executable, "-m", "cachewatch.engine.cli", "--version"], capture_output=True, text=True)
    assert out.stdout.strip() == f"cachewatch {cachewatch.engine.__version__}"


def test_run_help_says_what_run_does() -> None:
    # The help is plain text in a terminal: no reStructuredText markup, no promise of a future.
    out = subprocess.run([sys.executable, "-m", "cachewatch.engine.cli", "run", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "``" not in out.stdout and "will take this place" not in out.stdout
    assert "the dashboard on it" in out.stdout and 'preflight = "require"' in out.stdout


def test_version_command() -> None:
    import cachewatch.engine

    out = subprocess.run([sys.executable, "-m", "cachewatch.tui.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.strip() == f"cachewatch {cachewatch.engine.__version__}"


def test_command_owners_match_what_the_modules_register() -> None:
    """A command line naming one command imports only its module: the map must say who owns what."""
    import argparse
    import importlib

    from cachewatch.engine.cli import COMMAND_MODULES, COMMAND_OWNERS

    owners: dict[str, str] = {}
    for module in COMMAND_MODULES:
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(f"cachewatch.engine.cli.{module}").register(sub)
        owners.update({name: module for name in sub.choices})
    assert owners == COMMAND_OWNERS


def test_a_command_line_naming_one_command_loads_neither_the_engine_nor_numpy() -> None:
    code = (
        "import sys\n"
        "from cachewatch.engine.cli import main\n"
        "try:\n    main(['cache', 'stats', '/nonexistent-cache'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('numpy', 'cachewatch.engine.daemon.engine', 'cachewatch.engine.jobs', 'textual') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
