"""Kept so that older imports keep working; the engine helpers live in ``tests/support/engine.py``."""

from tests.support.engine import EXAMPLE, REPO, EngineEnv, proc_state, python_cmd, run_cli, sweep, wait_for

__all__ = ["EngineEnv", "EXAMPLE", "REPO", "python_cmd", "proc_state", "run_cli", "sweep", "wait_for"]
