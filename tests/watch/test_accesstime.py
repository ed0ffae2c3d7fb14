"""Which timestamp stands for last use, read from the mount options."""

from __future__ import annotations

from pathlib import Path

from cachewatch.engine.watch.accesstime import detect_access_source, mount_of

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
40 27 0:40 / /data rw,noatime - ext4 /dev/vdb rw
41 40 0:41 / /data/fast rw - tmpfs tmpfs rw
42 27 0:42 / /media/my\\040disk rw,nosuid,relatime - ext4 /dev/sdb1 rw
"""


def _info(tmp_path: Path) -> str:
    p = tmp_path / "mountinfo"
    p.write_text(MOUNTINFO)
    return str(p)


def test_noatime_mount_uses_mtime(tmp_path: Path) -> None:
    src = detect_access_source("/data/cache/images", _info(tmp_path))
    assert src.source == "mtime" and not src.use_atime
    assert "noatime" in src.reason and src.mount_point == "/data"


def test_longest_mount_wins_and_strictatime_uses_atime(tmp_path: Path) -> None:
    src = detect_access_source("/data/fast/x", _info(tmp_path))
    assert src.source == "atime" and src.mount_point == "/data/fast"
    assert "every read" in src.reason


def test_relatime_and_escaped_mount_points(tmp_path: Path) -> None:
    point, opts, fstype = mount_of("/media/my disk/cache", _info(tmp_path))  # type: ignore[misc]
    assert point == "/media/my disk" and "relatime" in opts and fstype == "ext4"
    src = detect_access_source("/media/my disk/cache", _info(tmp_path))
    assert src.source == "atime" and "once a day" in src.reason
    assert detect_access_source("/mediaX", _info(tmp_path)).mount_point == "/"


def test_unreadable_mountinfo_falls_back_to_atime(tmp_path: Path) -> None:
    src = detect_access_source("/x", str(tmp_path / "missing"))
    assert src.source == "atime" and "could not be read" in src.reason
