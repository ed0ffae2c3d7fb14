"""Keys map to file names that stay inside the root, whatever the key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from cachewatch.engine import Cache, CacheKeyError
from cachewatch.engine.cache.keys import MAX_NAME, _encoded, key_to_name, name_to_key

keys = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=400
)


@given(keys)
@settings(max_examples=400)
def test_name_is_two_safe_components(key: str) -> None:
    name = key_to_name(key)
    shard, leaf = name.split("/")
    assert len(shard) == 2 and all(c in "0123456789abcdef" for c in shard)
    assert leaf and not leaf.startswith(".") and "/" not in leaf and "\x00" not in leaf
    assert len(leaf.encode()) <= MAX_NAME
    assert os.path.normpath(os.path.join("/root", name)).startswith("/root/")


@given(keys, keys)
def test_distinct_keys_distinct_names(a: str, b: str) -> None:
    if a != b:
        assert key_to_name(a) != key_to_name(b)


@given(keys)
def test_reversible_unless_hashed(key: str) -> None:
    back = name_to_key(key_to_name(key))
    assert back in (key, None)
    if len(key_to_name(key).split("/")[1]) < MAX_NAME - 40:
        assert back == key


# Keys of the characters the fast path takes (and "." and "%", which it must not take first or at all).
plain_keys = st.text(alphabet="abcXYZ019_.-~+=,@%/", min_size=1, max_size=260)


@given(st.one_of(plain_keys, keys))
@settings(max_examples=600)
def test_plain_keys_skip_quote_but_get_the_same_name(key: str) -> None:
    """key_to_name names plain keys without quote(): the name must be the one the general rule
    gives (a different one would orphan every entry a previous version wrote)."""
    assert key_to_name(key).split("/", 1)[1] == _encoded(key)


def test_readable_names() -> None:
    assert key_to_name("train/a_s005.npz").endswith("/train%2Fa_s005.npz")
    assert key_to_name("../../etc/passwd").endswith("/%2E.%2F..%2Fetc%2Fpasswd")


def test_put_returns_the_entry_path_as_pathlib_would_join_it(tmp_path: Path) -> None:
    """put() joins its returned Path from a per-shard Path without re-parsing (pathlib's private
    join where it exists): it must be the same Path, part by part, as root / name."""
    with Cache(tmp_path / "c", max_size="1MiB") as cache:
        for key in ["plain.bin", "train/a b é.npz", "x" * 300, "k%%v1"]:
            path = cache.put(key, b"data")
            expected = cache.root / key_to_name(key)
            assert path == expected and path.parts == expected.parts and str(path) == str(expected)
            assert path.parent == expected.parent and path.name == expected.name
            assert path.read_bytes() == b"data"
            again = cache.put(key, b"again")  # a replacement: a versioned name in the same shard
            assert again.parent == expected.parent and again.parts == (cache.root / again.relative_to(cache.root)).parts


@pytest.mark.parametrize("bad, fragment", [("", "empty"), ("a\x00b", "NUL"), (42, "not a string"), (None, "not a string")])
def test_bad_keys(bad, fragment, tmp_path: Path) -> None:
    with Cache(tmp_path / "c", max_size="1MiB") as cache:
        with pytest.raises(CacheKeyError, match=fragment):
            cache.put(bad, b"x")
        with pytest.raises(CacheKeyError, match=fragment):
            cache.get(bad)


def test_traversal_keys_stay_inside(tmp_path: Path) -> None:
    outside = tmp_path / "etc"
    outside.mkdir()
    with Cache(tmp_path / "c", max_size="1MiB") as cache:
        for key in ["../../etc/passwd", "../etc/x", "/etc/passwd", ".cachewatch/index.sqlite", "..", "."]:
            path = cache.put(key, b"data")
            assert path.resolve().is_relative_to((tmp_path / "c").resolve())
            assert cache.read(key) == b"data"
    assert list(outside.iterdir()) == []
    assert (tmp_path / "c" / ".cachewatch" / "index.sqlite").stat().st_size > 4
