"""Which directories a watch may evict from: never the system's, never one holding the home directory.

A watch deletes the least recently used files under its root until the size is under
the limit. Pointed at ``/usr`` (a typo, a shell variable left empty) a dry run offered
to delete 116,827 files. So a root is refused, with one line saying why, when it is:

* ``/`` or inside one of the system trees (``/usr``, ``/etc``, ``/proc``, ``/boot``...);
* exactly one of the shared top-level directories (``/home``, ``/var``, ``/tmp``, ``/opt``...),
  whose subdirectories are where caches legitimately live;
* the home directory or any directory above it (``/home``, ``/home/users``...).

``allow_dangerous_root`` (``--allow-dangerous-root``, ``allow_dangerous_root = true`` in a
``[[watch]]``) lifts the refusal for someone who truly means it.
"""

from __future__ import annotations

import os

__all__ = ["SYSTEM_TREES", "SHARED_DIRS", "ALLOW_FLAG", "dangerous_root_reason"]

ALLOW_FLAG = "--allow-dangerous-root"

# The root and everything below: the operating system's own files.
SYSTEM_TREES = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin", "/sys", "/usr",
)
# Exactly these: shared by everyone or by the system, though caches live below them.
SHARED_DIRS = (
    "/", "/home", "/mnt", "/media", "/opt", "/root", "/run", "/srv", "/snap", "/tmp",
    "/var", "/var/cache", "/var/lib", "/var/log", "/var/spool", "/var/tmp",
)


def _real(p: str) -> str:
    return os.path.realpath(p)


def dangerous_root_reason(real_root: str, home: str | None = None) -> str | None:
    """Why evicting under ``real_root`` (already resolved) could destroy what is not a cache, or None.

    ``home`` defaults to ``$HOME`` (``~``); both it and the system paths are resolved, so a
    symlinked ``/home`` or a merged ``/bin -> /usr/bin`` is caught under either name.
    """
    root = os.path.normpath(real_root)
    for tree in SYSTEM_TREES:
        for t in {tree, _real(tree)}:
            if root == t or root.startswith(t + "/"):
                return f"is a system directory (under {tree}); evicting there deletes files the system needs"
    for d in SHARED_DIRS:
        if root == d or root == _real(d):
            what = "the whole filesystem" if d == "/" else "a directory shared by the whole system"
            return f"is {what}; evicting there deletes other people's and programs' files"
    home_real = _real(os.path.expanduser(home if home is not None else "~"))
    if root == home_real:
        return "is your home directory; evicting there deletes your own files"
    if home_real.startswith(root.rstrip("/") + "/"):
        return f"holds your home directory ({home_real}); evicting there deletes your own files"
    return None
