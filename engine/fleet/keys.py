"""The Redis key layout of a fleet, under one prefix (``[fleet] prefix``, default ``cachewatch``).

======================================  ==========  ====================================================
key                                     type        what
======================================  ==========  ====================================================
``P:engines``                           sorted set  member: engine id (``host/name``); score: the Redis
                                                    server's time (``TIME``) of its last heartbeat
``P:summary:<id>``                      string      JSON :class:`FleetSummary`; expires after 3 intervals
``P:events:<id>``                       stream      the engine's events (``MAXLEN ~`` capped)
``P:watching:<id>``                     string      set by a drill-down viewer (expires in seconds): the
                                                    engine then publishes the two keys below
``P:snapshot:<id>``                     string      JSON of the full ``EngineSnapshot``; expires
``P:output:<id>``                       stream      training output chunks (capped, expires)
``P:commands:<id>``                     stream      commands to the engine (read only when it has
                                                    ``accept_commands = true``)
``P:reply:<id>:<request>``              stream      the engine's answer to one command (expires)
======================================  ==========  ====================================================

The engine's time never scores a heartbeat: clocks of different machines disagree, the
server's one clock does not. An ACL user limited to ``~P:*`` can do everything cachewatch does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["FleetKeys", "engine_id", "split_engine_id", "REQUEST_RE"]

REQUEST_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def engine_id(host: str, name: str) -> str:
    """What identifies an engine in a fleet: engine names are unique per machine only."""
    return f"{host}/{name}"


def split_engine_id(eid: str) -> tuple[str, str]:
    host, _, name = eid.rpartition("/")
    return host, name


@dataclass(frozen=True)
class FleetKeys:
    prefix: str = "cachewatch"

    @property
    def engines(self) -> str:
        return f"{self.prefix}:engines"

    def summary(self, eid: str) -> str:
        return f"{self.prefix}:summary:{eid}"

    def events(self, eid: str) -> str:
        return f"{self.prefix}:events:{eid}"

    def watching(self, eid: str) -> str:
        return f"{self.prefix}:watching:{eid}"

    def snapshot(self, eid: str) -> str:
        return f"{self.prefix}:snapshot:{eid}"

    def output(self, eid: str) -> str:
        return f"{self.prefix}:output:{eid}"

    def commands(self, eid: str) -> str:
        return f"{self.prefix}:commands:{eid}"

    def reply(self, eid: str, request: str) -> str:
        if not REQUEST_RE.match(request):
            raise ValueError(f"request id {request!r} is not a short token")
        return f"{self.prefix}:reply:{eid}:{request}"
