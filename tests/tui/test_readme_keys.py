"""README's dashboard key table lists every key the dashboard has (one action table drives both)."""

from __future__ import annotations

import re

from cachewatch.tui import commands
from tests.support.helpers import REPO


def test_readme_key_table_has_every_action_key() -> None:
    text = (REPO / "README.md").read_text()
    section = text.split("## The dashboard", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    listed = set(re.findall(r"`([^`]+)`", table))
    missing = [f"{commands.key_label(a.key)} ({a.id})" for a in commands.ACTIONS
               if commands.key_label(a.key) not in listed]
    assert not missing, f"README's key table lacks {missing}"
