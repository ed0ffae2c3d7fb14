"""Which timestamp stands for "last used" on the watched filesystem: atime or mtime.

Linux updates a file's atime on reads unless the mount says otherwise: ``noatime``
never updates it (then the modification time is the best signal left),
``relatime`` (the default) updates it on the first read after a write and then at
most once a day, and ``strictatime`` on every read. The answer, and why, is shown
in the status so a user can tell how good the eviction order is. While watching,
opens reported by inotify refine the order whatever the mount does.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

__all__ = ["AccessTimeSource", "detect_access_source", "mount_of"]


@dataclass(frozen=True)
class AccessTimeSource:
    source: str  # "atime" or "mtime"
    reason: str
    mount_point: str
    mount_options: tuple[str, ...]

    @property
    def use_atime(self) -> bool:
        return self.source == "atime"

    def to_json(self) -> dict:
        out = asdict(self)
        out["mount_options"] = list(self.mount_options)
        return out


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_of(path: str, mountinfo: str = "/proc/self/mountinfo") -> tuple[str, tuple[str, ...], str] | None:
    """(mount point, per-mount options, filesystem type) of the mount holding ``path``, or None."""
    real = os.path.realpath(path)
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    best: tuple[str, tuple[str, ...], str] | None = None
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 6:
            continue
        point = _unescape(fields[4])
        inside = real == point or point == "/" or real.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best[0])):
            fstype = right.split()[0] if right.split() else ""
            best = (point, tuple(fields[5].split(",")), fstype)
    return best


def detect_access_source(path: str, mountinfo: str = "/proc/self/mountinfo") -> AccessTimeSource:
    found = mount_of(path, mountinfo)
    if found is None:
        return AccessTimeSource(
            "atime",
            "mount options could not be read; using the later of atime and mtime, refined by opens seen while watching",
            "",
            (),
        )
    point, opts, _fstype = found
    if "noatime" in opts:
        return AccessTimeSource(
            "mtime",
            f"the mount at {point} has noatime: reads never update atime, so the last write stands for the last use "
            "(opens seen while watching still count)",
            point,
            opts,
        )
    if "relatime" in opts:
        return AccessTimeSource(
            "atime",
            f"the mount at {point} has relatime: atime moves on the first read after a write, then at most once a day; "
            "opens seen while watching refine the order",
            point,
            opts,
        )
    return AccessTimeSource(
        "atime", f"the mount at {point} updates atime on every read (strictatime)", point, opts
    )
