"""Cache keys to file names that always stay inside the root.

A key is any non-empty string without NUL. Its file is ``<shard>/<encoded>``:

* ``shard`` is two hex digits of the key's xxh3 hash, so no directory holds more
  than 1/256 of the entries;
* ``encoded`` percent-encodes every byte outside ``[A-Za-z0-9_.~+=,@-]`` (``/``
  becomes ``%2F``, so ``../../etc/passwd`` is one harmless name) and a leading
  ``.`` (no hidden names, no ``.`` or ``..``, nothing that collides with
  ``.cachewatch``). Names stay readable: ``train/a_s005.npz`` is
  ``3f/train%2Fa_s005.npz``;
* names longer than :data:`MAX_NAME` bytes keep a readable prefix and end with the
  key's 128-bit hash after ``%%``, so they stay unique.

The mapping is deterministic, so any process (and ``verify``) finds a key's file
without the index, and :func:`name_to_key` reverses it where it can.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

import xxhash

from ..errors import CacheKeyError

__all__ = ["key_to_name", "name_to_key", "validate_key", "versioned_name", "MAX_KEY_BYTES", "MAX_NAME", "SHARD_RE"]

MAX_KEY_BYTES = 4096  # UTF-8; a key travels in a fixed-size ledger slot
MAX_NAME = 200  # bytes; filesystems allow 255 per component
_SAFE = "_.-+=,@"  # quote() also keeps "~"
_HASH_SEP = "%%"  # quote() never writes "%%": every % it writes is followed by two hex digits
SHARD_RE = re.compile(r"^[0-9a-f]{2}$")
_VERSION_RE = re.compile(r"%%v[0-9a-f]+$")


def validate_key(key: object) -> str:
    if not isinstance(key, str):
        raise CacheKeyError(f"key {key!r} is a {type(key).__name__}, not a string; use str(key) or a path-like string")
    if not key:
        raise CacheKeyError("key '' is empty; give each entry a non-empty string key")
    if "\x00" in key:
        raise CacheKeyError(f"key {key!r} contains a NUL character; remove it")
    try:
        n = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise CacheKeyError(f"key {key!r} is not valid Unicode (lone surrogate); encode it first") from None
    if n > MAX_KEY_BYTES:
        raise CacheKeyError(f"key {key[:40]!r}... is {n} bytes; keys are limited to {MAX_KEY_BYTES} bytes (UTF-8)")
    return key


# A key quote() leaves as it is (ASCII letters, digits and its safe marks, not hidden, short
# enough): the common case, named without calling quote(), which costs microseconds per put.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_\-~+=,@][A-Za-z0-9_.\-~+=,@]{0,%d}" % (MAX_NAME - 1))


def key_to_name(key: str) -> str:
    """The entry's path relative to the cache root (always two components, never hidden)."""
    validate_key(key)
    shard = xxhash.xxh3_64_hexdigest(key.encode("utf-8"))[:2]
    if _PLAIN_KEY.fullmatch(key) is not None:
        return f"{shard}/{key}"
    return f"{shard}/{_encoded(key)}"


def _encoded(key: str) -> str:
    """The file name of a key (the general rule; key_to_name skips it for plain keys, where it
    gives the key itself)."""
    encoded = quote(key, safe=_SAFE, encoding="utf-8", errors="strict")
    if encoded.startswith("."):
        encoded = "%2E" + encoded[1:]
    if len(encoded) > MAX_NAME:
        digest = xxhash.xxh3_128_hexdigest(key.encode("utf-8"))
        prefix = encoded[: MAX_NAME - len(digest) - len(_HASH_SEP)]
        # never cut a %XX escape in half
        cut = prefix.rfind("%", len(prefix) - 2)
        if cut != -1:
            prefix = prefix[:cut]
        encoded = prefix + _HASH_SEP + digest
    return encoded


def versioned_name(name: str, version: int | str) -> str:
    """The name a new version takes while an older one is still pinned at ``name``."""
    return f"{name}%%v{version}"


def name_to_key(name: str) -> str | None:
    """The key a file name was made from, or None when the name is not one of ours or was hashed."""
    name = _VERSION_RE.sub("", name)
    parts = name.split("/")
    if len(parts) != 2 or not SHARD_RE.match(parts[0]):
        return None
    encoded = parts[1]
    if _HASH_SEP in encoded or encoded.startswith(".") or not encoded:
        return None
    try:
        key = unquote(encoded, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        return None
    try:
        if key_to_name(key) != name:
            return None
    except CacheKeyError:
        return None
    return key
