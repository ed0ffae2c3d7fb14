"""Kept so that older imports keep working; the helpers live in ``tests/support/helpers.py``."""

from tests.support.helpers import REPO, run_cli, wait_for

__all__ = ["REPO", "run_cli", "wait_for"]
