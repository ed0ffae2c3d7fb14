"""Dashboard tests: a fixed local time zone, so snapshots do not depend on the machine."""

from __future__ import annotations

import time
from typing import Iterator

import pytest


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Times on screen are local; snapshots must not depend on the machine's zone.
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()

