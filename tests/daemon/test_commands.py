"""The command handlers and the command table describe the same commands."""

from __future__ import annotations

import pytest

from cachewatch.engine.daemon import commands
from cachewatch.engine.daemon.protocol import COMMANDS


def test_every_command_has_exactly_one_handler_and_every_handler_a_command() -> None:
    assert set(commands.HANDLERS) == set(COMMANDS)
    # one distinct handler per command: two names sharing a function would be a copy-paste slip
    plain = [h for name, h in commands.HANDLERS.items() if not COMMANDS[name].long_running]
    assert len({id(h) for h in plain}) == len(plain)
    jobs = [commands.HANDLERS[n] for n, spec in COMMANDS.items() if spec.long_running]
    assert len({id(h) for h in jobs}) == len(jobs)


def test_a_handler_for_an_unknown_or_already_handled_command_is_refused() -> None:
    with pytest.raises(ValueError):
        commands._handles("no_such_command")(lambda engine, args: {})
    with pytest.raises(ValueError):
        commands._handles("pause")(lambda engine, args: {})
    assert commands.HANDLERS["pause"] is not None and set(commands.HANDLERS) == set(COMMANDS)


def test_destructive_by_arguments() -> None:
    # what the dashboard asks about and the engine records, call by call
    split = COMMANDS["split"]
    assert split.destructive  # the command can delete: the help column and --readonly
    assert not split.is_destructive({"input": "a", "output": "b"})
    assert split.is_destructive({"delete_original": True, "confirmed": True})
    assert split.is_destructive({"overwrite": True})
    assert not COMMANDS["verify"].is_destructive({}) and COMMANDS["verify"].is_destructive({"repair": True})
    assert COMMANDS["evict"].is_destructive({}) and not COMMANDS["evict"].is_destructive({"dry_run": True})
    assert COMMANDS["stop"].is_destructive({}) and not COMMANDS["start"].is_destructive({})
