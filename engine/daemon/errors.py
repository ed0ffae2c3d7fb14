"""Errors of the headless engine and its clients (all one line, all ``CachewatchError``)."""

from __future__ import annotations

from ..errors import CachewatchError

__all__ = [
    "EngineError",
    "NoEngine",
    "EngineNameTaken",
    "RuntimeDirError",
    "ProtocolError",
    "CommandFailed",
    "ConnectionLost",
]


class EngineError(CachewatchError):
    """Something about a headless engine that cannot be done."""


class NoEngine(EngineError):
    """No running engine matches; scripts get exit code 3 for this one."""

    exit_code = 3


class EngineNameTaken(EngineError):
    """Another live engine already uses this name."""


class RuntimeDirError(EngineError):
    """The private socket directory is missing, foreign or too open, and cannot be used safely."""


class ProtocolError(EngineError):
    """The other end speaks an incompatible protocol or sent something that is not a message."""


class CommandFailed(EngineError):
    """The engine answered a command with an error; ``code`` is the machine-readable reason."""

    def __init__(self, message: str, code: str = "failed") -> None:
        super().__init__(message)
        self.code = code


class ConnectionLost(EngineError):
    """The engine closed the connection (it stopped, or dropped this client)."""

    exit_code = 3
