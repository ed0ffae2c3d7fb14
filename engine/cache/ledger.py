"""Bytes on disk (or about to be) that the index does not hold, counted in a shared-memory ledger.

Every process that writes to the cache owns one slot of ``.cachewatch/ledger`` (a sparse
file mapped with ``mmap``). A slot holds the owner's liveness token and its bytes: writes in
flight, files renamed into place whose rows are not committed yet (its pending batch), and
files it evicted from the index but has not unlinked yet. The header keeps running totals
of every slot, so a reservation reads one field. (A slot's *intent* is kept for ledgers
written before the per-writer journal replaced it.)

Why shared memory and not rows in the SQLite index: a reservation is on the hot path of
every put, and an index write costs two dozen system calls (WAL frames, shared-memory
locks) where this is a few memory stores. Why it is safe:

* the kernel keeps a shared file mapping's pages when its process is killed, so a slot
  still says what a dead writer had on disk;
* counts change so that a crash over-counts (bytes leave a slot only after the index holds
  them or they are gone from disk), never under-counts; the totals grow first and shrink last;
* a slot whose owner's token lock can be taken belongs to a dead process and is reclaimed
  after its journal is replayed.

Everything here changes under the cache's reservation mutex.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = ["Ledger", "LedgerBackend", "Slot", "LEDGER_SLOTS"]

_MAGIC = b"CWLEDG04"
_HEADER = struct.Struct("<8sII")  # magic, slot count, high water (slots ever used)
_RELEASED_AT = 16  # int64: bytes ever released or freed from slots (monotonic; in the header's spare room)
# int64 x2: the sum of every used slot's bytes and writes, so that a reservation reads one
# field instead of walking every slot (the per-put critical section). A kill between a slot's
# change and the total's can only leave the total too high (it grows first and shrinks last);
# recovery, which runs whenever a writer died, recomputes it from the slots.
_TOTALS_AT = 24
# int64: bytes evictors have counted in their slots on the way out of the index, less those whose
# eviction was undone (see evicted_total). Zero in a ledger made before it: readers subtract nothing.
_EVICTED_AT = 40
# The four header fields one reservation reads, adjacent: released, totals (bytes, writes), evicted.
_HOT = struct.Struct("<qqqq")
_HOT_AT = _RELEASED_AT
_TOTALS = struct.Struct("<qq")
_HEADER_SIZE = 64
_SLOT_SIZE = 512
_TOKEN = 48
# slot header: used u32 | pad u32 | token 48s | reserved q | writes q | intent length H | pad 6
_SLOT = struct.Struct(f"<II{_TOKEN}sqqH6x")
_RESERVED_AT = 8 + _TOKEN
_INTENT_LEN_AT = _RESERVED_AT + 16
_INTENT_AT = _SLOT.size  # 80
_INTENT_MAX = _SLOT_SIZE - _INTENT_AT
LEDGER_SLOTS = 1024

@dataclass(frozen=True)
class Slot:
    index: int
    token: str
    reserved_bytes: int
    writes: int
    intent: str


class LedgerBackend(Protocol):
    """What the cache needs from a ledger: the count of bytes on disk (or about to be) that the
    index does not hold, per writer, and each writer's intent. One half of the cache's seam
    (the other is :class:`~.index.IndexBackend`); :class:`Ledger` implements it in shared
    memory, a Redis backend will implement it with server-side counters.

    Every method is called with the cache's process mutex held (the backend's own lock for a
    remote one). A slot's counts must survive its owner's death until :meth:`free`.
    """

    slots: int

    def claim(self, token: str) -> int | None: ...
    def free(self, index: int) -> None: ...
    def reserve_within(self, index: int, n_bytes: int, base: int, limit: int) -> bool: ...
    def release(self, index: int, n_bytes: int, n_writes: int = 1) -> None: ...
    def add_bytes(self, index: int, n_bytes: int, *, indexed: bool = True) -> None: ...
    def count_evicting(self, index: int, n_bytes: int) -> None: ...
    def uncount_evicting(self, index: int, n_bytes: int) -> None: ...
    def set_intent(self, index: int, name: str) -> None: ...
    def clear_intent(self, index: int) -> None: ...
    def read(self, index: int) -> "Slot | None": ...
    def used(self) -> "list[Slot]": ...
    def totals(self) -> tuple[int, int]: ...
    def released_total(self) -> int: ...
    def evicted_total(self) -> int: ...
    def recount(self) -> tuple[int, int]: ...
    def close(self) -> None: ...


class Ledger:
    """The mapped ledger file (a :class:`LedgerBackend`). Not thread-safe by itself: callers hold the process mutex."""

    def __init__(self, path: Path, slots: int = LEDGER_SLOTS, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        size = _HEADER_SIZE + slots * _SLOT_SIZE
        self._mm: mmap.mmap | bytes
        if readonly:
            # Inspection (stats, verify without --repair) must change nothing: map what is
            # there if it has this layout, else see an empty ledger.
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                self._mm, self.slots = bytes(size), slots
                return
            try:
                ok = os.pread(fd, len(_MAGIC), 0) == _MAGIC and os.fstat(fd).st_size >= size
                self._mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ) if ok else bytes(size)
            finally:
                os.close(fd)
            self.slots = slots
            return
        # Called under the cache mutex: two processes must not both initialise the file.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            if os.pread(fd, len(_MAGIC), 0) != _MAGIC:
                os.ftruncate(fd, 0)  # new, or an older layout: start from zeros (sparse again)
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)  # sparse: only slots that are used take space
            self._mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        if bytes(self._mm[: len(_MAGIC)]) != _MAGIC:
            _HEADER.pack_into(self._mm, 0, _MAGIC, slots, 0)
        self.slots = slots

    def close(self) -> None:
        try:
            if isinstance(self._mm, mmap.mmap):
                self._mm.close()
        except (BufferError, ValueError):
            pass

    # --- header ----------------------------------------------------------------------------
    def _high(self) -> int:
        return _HEADER.unpack_from(self._mm, 0)[2]

    def _set_high(self, high: int) -> None:
        _HEADER.pack_into(self._mm, 0, _MAGIC, self.slots, high)

    @staticmethod
    def _off(index: int) -> int:
        return _HEADER_SIZE + index * _SLOT_SIZE

    def _text(self, at: int, length: int, limit: int) -> str:
        return bytes(self._mm[at : at + min(length, limit)]).decode("utf-8", "replace")

    def _put_text(self, at: int, text: str, limit: int) -> int:
        raw = text.encode("utf-8")[:limit]
        self._mm[at : at + len(raw)] = raw
        return len(raw)

    # --- slots -----------------------------------------------------------------------------
    def read(self, index: int) -> Slot | None:
        off = self._off(index)
        used, _pad, token, reserved, writes, ilen = _SLOT.unpack_from(self._mm, off)
        if not used:
            return None
        intent = self._text(off + _INTENT_AT, ilen, _INTENT_MAX)
        return Slot(index, token.rstrip(b"\0").decode("ascii", "replace"), reserved, writes, intent)

    def used(self) -> list[Slot]:
        return [s for s in (self.read(i) for i in range(self._high())) if s is not None]

    def totals(self) -> tuple[int, int]:
        """(bytes counted by all writers: reservations, renamed-not-indexed files, evicted files
        not yet unlinked; writes in flight). One read of the header's running totals."""
        return struct.unpack_from("<qq", self._mm, _TOTALS_AT)  # type: ignore[return-value]

    def _add_totals(self, n_bytes: int, n_writes: int) -> None:
        reserved, writes = struct.unpack_from("<qq", self._mm, _TOTALS_AT)
        struct.pack_into("<qq", self._mm, _TOTALS_AT, max(0, reserved + n_bytes), max(0, writes + n_writes))

    def recount(self) -> tuple[int, int]:
        """Recompute the running totals from the slots (after a writer died mid-update)."""
        reserved = writes = 0
        for i in range(self._high()):
            used, _pad, _token, r, w, _ilen = _SLOT.unpack_from(self._mm, self._off(i))
            if used:
                reserved += r
                writes += w
        struct.pack_into("<qq", self._mm, _TOTALS_AT, reserved, writes)
        return reserved, writes

    def claim(self, token: str) -> int | None:
        """A free slot for ``token``, or None when every slot is in use (reclaim dead ones first)."""
        high = self._high()
        for i in range(high):
            if not _SLOT.unpack_from(self._mm, self._off(i))[0]:
                self._write_slot(i, token)
                return i
        if high < self.slots:
            self._write_slot(high, token)
            self._set_high(high + 1)
            return high
        return None

    def _write_slot(self, index: int, token: str) -> None:
        off = self._off(index)
        # Token first, then "used": a crash in between leaves a free slot, not a nameless one.
        _SLOT.pack_into(self._mm, off, 0, 0, token.encode("ascii")[:_TOKEN], 0, 0, 0)
        struct.pack_into("<I", self._mm, off, 1)

    def free(self, index: int) -> None:
        reserved, writes = struct.unpack_from("<qq", self._mm, self._off(index) + _RESERVED_AT)
        self._add_released(reserved)  # a dead writer's bytes may have reached the index: see released_total
        _SLOT.pack_into(self._mm, self._off(index), 0, 0, b"", 0, 0, 0)
        self._add_totals(-reserved, -writes)  # shrink last: a kill in between over-counts

    def _add_released(self, n_bytes: int) -> None:
        if n_bytes > 0:
            (total,) = struct.unpack_from("<q", self._mm, _RELEASED_AT)
            struct.pack_into("<q", self._mm, _RELEASED_AT, total + n_bytes)

    def released_total(self) -> int:
        """Bytes ever taken out of slots (released or freed) that may have gone into the index.
        Monotonic; readable without the mutex.

        A reserver reads it, then the index counters, both *outside* the mutex, then this again
        inside: every byte that left the ledger in between is added back (it may or may not be in
        the counters it read), so the estimate over-counts, never under-counts. Bytes that left a
        slot because their file is gone (``add_bytes(..., indexed=False)``) need not be added back.
        """
        return self._read_q(_RELEASED_AT)

    def evicted_total(self) -> int:
        """Bytes evictors count in their slots on the way out of the index (``count_evicting``), less
        the evictions undone. Readable without the mutex.

        A reserver reads it *after* the index counters (and again inside the mutex) and subtracts
        the difference: a victim counted after the counters were read was in them (its rows were
        removed later) or came into the index later (then counted by released_total or its writer's
        slot), and until its file is gone it is in the evictor's slot too. So the estimate still
        never under-counts, and an eviction no longer leaves every other writer's estimate too high.
        """
        return self._read_q(_EVICTED_AT)

    def _read_q(self, at: int) -> int:
        while True:  # two equal reads: never a torn 8-byte value
            a = struct.unpack_from("<q", self._mm, at)[0]
            b = struct.unpack_from("<q", self._mm, at)[0]
            if a == b:
                return a

    def reserve_within(self, index: int, n_bytes: int, base: int, limit: int) -> bool:
        """Count ``n_bytes`` of one more write in flight in slot ``index`` (and the totals) if
        ``base`` + the ledger's count (totals + released - evicted) + ``n_bytes`` <= ``limit``,
        in one read of the header; False (nothing changed) otherwise.

        This is the whole per-put critical section, so it is one method of a few struct calls:
        every wall-clock microsecond of it is time in which the holder can be preempted with
        the mutex held, and on a machine with more writers than cores that is what the mutex
        hold's tail is made of. (Under the mutex every field read here is written only by
        holders, so one plain read is never torn.)
        """
        mm = self._mm
        released, reserved, writes, evicted = _HOT.unpack_from(mm, _HOT_AT)
        if base + reserved + released - evicted + n_bytes > limit:
            return False
        _TOTALS.pack_into(mm, _TOTALS_AT, reserved + n_bytes, writes + 1)  # totals first: a kill in between over-counts
        off = _HEADER_SIZE + index * _SLOT_SIZE + _RESERVED_AT
        mine, my_writes = _TOTALS.unpack_from(mm, off)
        _TOTALS.pack_into(mm, off, mine + n_bytes, my_writes + 1)
        return True

    def release(self, index: int, n_bytes: int, n_writes: int = 1) -> None:
        """Stop counting ``n_bytes`` of ``n_writes`` writes (a batch of puts now in the index)."""
        off = self._off(index) + _RESERVED_AT
        reserved, writes = struct.unpack_from("<qq", self._mm, off)
        gone_b, gone_w = min(reserved, n_bytes), min(writes, n_writes)
        struct.pack_into("<qq", self._mm, off, reserved - gone_b, writes - gone_w)
        self._add_released(gone_b)
        self._add_totals(-gone_b, -gone_w)

    def add_bytes(self, index: int, n_bytes: int, *, indexed: bool = True) -> None:
        """Count bytes that are on disk but no longer in the index (evicted files not yet unlinked),
        or (negative) stop counting them. ``indexed=False``: those bytes are gone from disk, not
        into the index, so released_total need not grow (see there)."""
        if n_bytes > 0:
            self._add_totals(n_bytes, 0)
        off = self._off(index) + _RESERVED_AT
        (reserved,) = struct.unpack_from("<q", self._mm, off)
        struct.pack_into("<q", self._mm, off, max(0, reserved + n_bytes))
        if n_bytes < 0:
            if indexed:
                self._add_released(min(reserved, -n_bytes))
            self._add_totals(-min(reserved, -n_bytes), 0)

    def count_evicting(self, index: int, n_bytes: int) -> None:
        """An evictor counts its victims before their rows leave the index (see evicted_total).
        The slot grows first: a kill in between over-counts."""
        self.add_bytes(index, n_bytes)
        struct.pack_into("<q", self._mm, _EVICTED_AT, self._read_q(_EVICTED_AT) + n_bytes)

    def uncount_evicting(self, index: int, n_bytes: int) -> None:
        """Victims whose rows did not leave the index (changed meanwhile, or the transaction failed):
        evicted_total shrinks first, then the slot (a kill in between over-counts)."""
        struct.pack_into("<q", self._mm, _EVICTED_AT, self._read_q(_EVICTED_AT) - n_bytes)
        self.add_bytes(index, -n_bytes, indexed=False)

    def set_intent(self, index: int, name: str) -> None:
        off = self._off(index)
        n = self._put_text(off + _INTENT_AT, name, _INTENT_MAX)
        struct.pack_into("<H", self._mm, off + _INTENT_LEN_AT, n)

    def clear_intent(self, index: int) -> None:
        struct.pack_into("<H", self._mm, self._off(index) + _INTENT_LEN_AT, 0)
