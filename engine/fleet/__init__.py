"""Several machines: engines publish to one Redis server, and anyone with access reads the fleet.

The engine side (:mod:`.publisher`) never blocks the engine or its training on Redis: it runs
in its own threads and only reads the engine's immutable snapshots. The reading side
(:mod:`.reader`) is what ``cachewatch fleet`` and the fleet screen use. :mod:`.keys` is the
key layout, the one place key names are spelled (docs/fleet.md shows it, and the ACL).

Only TTL'd string keys, sorted sets and streams are used (no keyspace notifications, no
Lua), so Dragonfly and Valkey work as well as Redis.
"""

from __future__ import annotations

from .keys import FleetKeys, engine_id
from .summary import FleetSummary

__all__ = ["FleetKeys", "FleetSummary", "engine_id"]
