"""Sizes and durations as people write them."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from cachewatch.engine.sizes import SizeError, format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    "text, expected",
    [
        ("100GB", 100 * 10**9),
        ("64MiB", 64 * 2**20),
        ("1.5 GiB", int(1.5 * 2**30)),
        ("512", 512),
        ("10kb", 10_000),
        ("2 TiB", 2 * 2**40),
        ("0", 0),
        (4096, 4096),
        (1.5e3, 1500),
    ],
)
def test_parse_size(text, expected) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("-5GB", "negative"),
        (-1, "negative"),
        ("12XB", "unknown unit 'XB'"),
        ("lots", "not a size"),
        (True, "not a size"),
        (None, "not a size"),
        (float("nan"), "finite"),
    ],
)
def test_bad_sizes_name_the_value(text, fragment) -> None:
    with pytest.raises(SizeError, match=fragment) as exc:
        parse_size(text, what="[cache] max_size")
    assert "[cache] max_size" in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "text, seconds",
    [("90s", 90), ("2h", 7200), ("1h30m", 5400), ("7d", 604800), ("250ms", 0.25), (12, 12), ("3", 3)],
)
def test_parse_duration(text, seconds) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["-3s", "3 parsecs", "h", "", "1h garbage"])
def test_bad_durations(text) -> None:
    with pytest.raises(SizeError):
        parse_duration(text)


def test_format() -> None:
    assert format_size(1536) == "1.5 KiB"
    assert format_size(100 * 10**9, binary=False) == "100.0 GB"
    assert format_size(17) == "17 B"
    assert format_duration(38.8 * 3600) == "1d 14h"
    assert format_duration(125) == "2m 05s"
    assert format_duration(None) == "--"


@given(st.integers(min_value=0, max_value=2**60))
def test_binary_round_trip_within_display_precision(n: int) -> None:
    text = format_size(n)
    assert abs(parse_size(text) - n) <= max(0.051 * n, 1)
