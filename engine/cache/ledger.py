"""Writes in flight and commit requests, in a small shared-memory ledger.

Every process that writes to the cache owns one slot of ``.cachewatch/ledger`` (a sparse
file mapped with ``mmap``). A slot holds:

* the owner's liveness token and the bytes it has reserved for writes in flight, plus
  bytes of files it evicted but has not unlinked yet;
* its *intent*: the entry name a finished file is about to be renamed into;
* a *commit request*: a finished ``.part`` file waiting to become an entry. Whoever holds
  the cache mutex commits every posted request in one SQLite transaction (group commit
  by flat combining), so a dozen writers pay for one transaction, not a dozen.

Why shared memory and not rows in the SQLite index: reservations and requests sit on the
hot path of every put, and an index write costs two dozen system calls. Why it is safe:

* the kernel keeps a shared file mapping's pages when its process is killed, so a slot
  still says what a dead writer had reserved, posted and was renaming;
* counts are changed so that a crash over-counts (a reservation is released only after
  its entry is committed), never under-counts;
* a request is sealed with a checksum written last: a reader that sees a torn request
  (a process killed mid-post, or stores seen out of order) ignores it;
* a slot whose owner's token lock can be taken belongs to a dead process and is reclaimed.

Counts and states change only under the cache's process mutex. A request's fields are
written by its owner outside the mutex while the state says "none", then published.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import xxhash

__all__ = ["Ledger", "Slot", "CommitRequest", "LEDGER_SLOTS", "MAX_KEY_BYTES", "POSTED", "DONE", "FAILED"]

_MAGIC = b"CWLEDG02"
_HEADER = struct.Struct("<8sII")  # magic, slot count, high water (slots ever used)
_HEADER_SIZE = 64
_SLOT_SIZE = 8192
_TOKEN = 48
# slot header: used u32 | pad u32 | token 48s | reserved q | writes q | intent length H | pad 6
_SLOT = struct.Struct(f"<II{_TOKEN}sqqH6x")
_RESERVED_AT = 8 + _TOKEN
_INTENT_LEN_AT = _RESERVED_AT + 16
_INTENT_AT = _SLOT.size  # 80
_INTENT_MAX = 432
# commit request at 512: state u32 | seq u32 | size q | charge q | ino q | seal 8s |
#                        part len H | name len H | key len H | result len H | msg len H | pad 6
_REQ_AT = 512
_REQ = struct.Struct("<IIqqq8sHHHHH6x")
_LENGTHS_AT = _REQ_AT + 46  # result len H, message len H (offsets within _REQ)
_PART_MAX, _NAME_MAX, _RESULT_MAX, _MSG_MAX = 96, 256, 256, 256
_CHECKSUM_AT = _REQ_AT + _REQ.size
_PART_AT = _CHECKSUM_AT + 16
_NAME_AT = _PART_AT + _PART_MAX
_RESULT_AT = _NAME_AT + _NAME_MAX
_MSG_AT = _RESULT_AT + _RESULT_MAX
_KEY_AT = _MSG_AT + _MSG_MAX
MAX_KEY_BYTES = _SLOT_SIZE - _KEY_AT
LEDGER_SLOTS = 1024

NONE, POSTED, DONE, FAILED = 0, 1, 2, 3


@dataclass(frozen=True)
class Slot:
    index: int
    token: str
    reserved_bytes: int
    writes: int
    intent: str


@dataclass(frozen=True)
class CommitRequest:
    """A finished ``.part`` file that should become the entry ``key``."""

    seq: int
    key: str
    name: str  # the key's base file name (the combiner may choose a versioned one)
    part: str  # file name under .cachewatch/tmp
    size: int
    charge: int
    checksum: str
    ino: int


class Ledger:
    """The mapped ledger file. Counts change only under the cache's process mutex."""

    def __init__(self, path: Path, slots: int = LEDGER_SLOTS) -> None:
        self.path = path
        size = _HEADER_SIZE + slots * _SLOT_SIZE
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
        """(bytes counted by all writers: reservations and evicted files not yet unlinked, writes in flight)."""
        reserved = writes = 0
        for i in range(self._high()):
            used, _pad, _token, r, w, _ilen = _SLOT.unpack_from(self._mm, self._off(i))
            if used:
                reserved += r
                writes += w
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
        struct.pack_into("<I", self._mm, off + _REQ_AT, NONE)
        # Token first, then "used": a crash in between leaves a free slot, not a nameless one.
        _SLOT.pack_into(self._mm, off, 0, 0, token.encode("ascii")[:_TOKEN], 0, 0, 0)
        struct.pack_into("<I", self._mm, off, 1)

    def free(self, index: int) -> None:
        off = self._off(index)
        _SLOT.pack_into(self._mm, off, 0, 0, b"", 0, 0, 0)
        struct.pack_into("<I", self._mm, off + _REQ_AT, NONE)

    def reserve(self, index: int, n_bytes: int) -> None:
        off = self._off(index) + _RESERVED_AT
        reserved, writes = struct.unpack_from("<qq", self._mm, off)
        struct.pack_into("<qq", self._mm, off, reserved + n_bytes, writes + 1)

    def release(self, index: int, n_bytes: int) -> None:
        off = self._off(index) + _RESERVED_AT
        reserved, writes = struct.unpack_from("<qq", self._mm, off)
        struct.pack_into("<qq", self._mm, off, max(0, reserved - n_bytes), max(0, writes - 1))

    def add_bytes(self, index: int, n_bytes: int) -> None:
        """Count bytes that are on disk but no longer in the index (evicted files not yet unlinked)."""
        off = self._off(index) + _RESERVED_AT
        (reserved,) = struct.unpack_from("<q", self._mm, off)
        struct.pack_into("<q", self._mm, off, max(0, reserved + n_bytes))

    def set_intent(self, index: int, name: str) -> None:
        off = self._off(index)
        n = self._put_text(off + _INTENT_AT, name, _INTENT_MAX)
        struct.pack_into("<H", self._mm, off + _INTENT_LEN_AT, n)

    def clear_intent(self, index: int) -> None:
        struct.pack_into("<H", self._mm, self._off(index) + _INTENT_LEN_AT, 0)

    # --- commit requests -------------------------------------------------------------------
    @staticmethod
    def _seal(req: CommitRequest) -> bytes:
        text = f"{req.seq}\0{req.key}\0{req.name}\0{req.part}\0{req.size}\0{req.charge}\0{req.checksum}\0{req.ino}"
        return xxhash.xxh3_64_digest(text.encode("utf-8"))

    def post(self, index: int, req: CommitRequest) -> None:
        """Publish a commit request (by its owner, outside the mutex). Fields first, state last."""
        off = self._off(index)
        struct.pack_into("<I", self._mm, off + _REQ_AT, NONE)
        plen = self._put_text(off + _PART_AT, req.part, _PART_MAX)
        nlen = self._put_text(off + _NAME_AT, req.name, _NAME_MAX)
        klen = self._put_text(off + _KEY_AT, req.key, MAX_KEY_BYTES)
        self._mm[off + _CHECKSUM_AT : off + _CHECKSUM_AT + 16] = req.checksum.encode("ascii")[:16].ljust(16, b"0")
        _REQ.pack_into(
            self._mm, off + _REQ_AT, NONE, req.seq, req.size, req.charge, req.ino, self._seal(req), plen, nlen, klen, 0, 0
        )
        struct.pack_into("<I", self._mm, off + _REQ_AT, POSTED)

    def request(self, index: int) -> CommitRequest | None:
        """The posted request of a slot, or None (nothing posted, or torn: the seal does not match)."""
        off = self._off(index)
        state, seq, size, charge, ino, seal, plen, nlen, klen, _rlen, _mlen = _REQ.unpack_from(self._mm, off + _REQ_AT)
        if state != POSTED:
            return None
        req = CommitRequest(
            seq=seq,
            key=self._text(off + _KEY_AT, klen, MAX_KEY_BYTES),
            name=self._text(off + _NAME_AT, nlen, _NAME_MAX),
            part=self._text(off + _PART_AT, plen, _PART_MAX),
            size=size,
            charge=charge,
            checksum=bytes(self._mm[off + _CHECKSUM_AT : off + _CHECKSUM_AT + 16]).decode("ascii", "replace"),
            ino=ino,
        )
        return req if self._seal(req) == seal else None

    def posted(self) -> list[tuple[int, CommitRequest]]:
        out = []
        for i in range(self._high()):
            off = self._off(i)
            if _SLOT.unpack_from(self._mm, off)[0] and struct.unpack_from("<I", self._mm, off + _REQ_AT)[0] == POSTED:
                req = self.request(i)
                if req is not None:
                    out.append((i, req))
        return out

    def finish(self, index: int, seq: int, state: int, result: str = "", message: str = "") -> None:
        """Record a request's outcome (under the mutex): DONE with the entry name, or FAILED with why."""
        off = self._off(index)
        rlen = self._put_text(off + _RESULT_AT, result, _RESULT_MAX)
        mlen = self._put_text(off + _MSG_AT, message, _MSG_MAX)
        struct.pack_into("<HH", self._mm, off + _LENGTHS_AT, rlen, mlen)
        struct.pack_into("<II", self._mm, off + _REQ_AT, state, seq)

    def outcome(self, index: int, seq: int) -> tuple[int, str, str]:
        """(state, entry name, message) of this slot's request number ``seq``."""
        off = self._off(index)
        state, got_seq = struct.unpack_from("<II", self._mm, off + _REQ_AT)
        if got_seq != seq:
            return NONE, "", ""
        rlen, mlen = struct.unpack_from("<HH", self._mm, off + _LENGTHS_AT)
        return state, self._text(off + _RESULT_AT, rlen, _RESULT_MAX), self._text(off + _MSG_AT, mlen, _MSG_MAX)
