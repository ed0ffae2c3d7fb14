"""The headless engine process: Unix-socket server, versioned protocol, clients, snapshots.

``Engine`` composes the cache, the supervised training and the samplers and publishes
immutable ``EngineSnapshot`` values; ``EngineServer`` serves one engine on a private Unix
socket; ``EngineClient`` / ``AsyncEngineClient`` talk to it; ``start_daemon`` starts a
detached engine. The protocol is described in ``protocol.py`` and ``docs/engine.md``.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

# Names load their module on first use: a command line that needs only the runtime registry
# (``cachewatch cache stats``) must not pay for the engine, the jobs and NumPy.
_LAZY = {
    "AsyncEngineClient": ".client",
    "EngineClient": ".client",
    "connect": ".client",
    "Engine": ".engine",
    "CommandFailed": ".errors",
    "ConnectionLost": ".errors",
    "EngineError": ".errors",
    "EngineNameTaken": ".errors",
    "NoEngine": ".errors",
    "ProtocolError": ".errors",
    "RuntimeDirError": ".errors",
    "Finding": ".alerts",
    "EngineParts": ".parts",
    "run_engine": ".process",
    "start_daemon": ".process",
    "COMMANDS": ".protocol",
    "PROTOCOL_VERSION": ".protocol",
    "CommandSpec": ".protocol",
    "LogChunk": ".protocol",
    "EngineEntry": ".runtime",
    "find_engine": ".runtime",
    "list_engines": ".runtime",
    "runtime_dir": ".runtime",
    "EngineServer": ".server",
    "Alert": ".snapshot",
    "CacheView": ".snapshot",
    "EngineInfo": ".snapshot",
    "EngineSnapshot": ".snapshot",
    "EvictionView": ".snapshot",
    "JobView": ".snapshot",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from .client import AsyncEngineClient, EngineClient, connect
    from .engine import Engine
    from .errors import CommandFailed, ConnectionLost, EngineError, EngineNameTaken, NoEngine, ProtocolError, RuntimeDirError
    from .alerts import Finding
    from .parts import EngineParts
    from .process import run_engine, start_daemon
    from .protocol import COMMANDS, PROTOCOL_VERSION, CommandSpec, LogChunk
    from .runtime import EngineEntry, find_engine, list_engines, runtime_dir
    from .server import EngineServer
    from .snapshot import (
        Alert,
        CacheView,
        EngineInfo,
        EngineSnapshot,
        EvictionView,
        JobView,
    )

__all__ = [
    "Engine",
    "EngineServer",
    "EngineClient",
    "AsyncEngineClient",
    "connect",
    "start_daemon",
    "run_engine",
    "EngineParts",
    "Finding",
    "EngineEntry",
    "find_engine",
    "list_engines",
    "runtime_dir",
    "PROTOCOL_VERSION",
    "COMMANDS",
    "CommandSpec",
    "LogChunk",
    "EngineError",
    "NoEngine",
    "EngineNameTaken",
    "RuntimeDirError",
    "ProtocolError",
    "CommandFailed",
    "ConnectionLost",
    "EngineSnapshot",
    "EngineInfo",
    "CacheView",
    "EvictionView",
    "Alert",
    "JobView",
]
