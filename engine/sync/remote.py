"""Where a pushed cache lives: a mounted volume (a directory) or an S3 bucket and prefix.

Both hold the same layout (:mod:`.manifest`): ``objects/<xx>/<xxh3>-<size>`` and
``manifests/<seq>.json``. A remote only stores and lists names; every hash is checked by
the transfer code, so a server (or a disk) that hands back other bytes is caught there.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterator

from ..osutil import fsync_dir as _fsync_dir
from .errors import RemoteConfigError, SyncError
from .manifest import parse_manifest_name

__all__ = ["Remote", "VolumeRemote", "open_remote"]

_CHUNK = 1 << 20


class Remote(ABC):
    url: str

    @abstractmethod
    def list_objects(self) -> Iterator[tuple[str, int]]:
        """(name, stored size) of every object, e.g. ``objects/ab/ab12...-100``."""

    @abstractmethod
    def put_bytes(self, name: str, data: bytes, xxh3: str) -> None:
        """Store ``data`` under ``name`` whole or not at all."""

    @abstractmethod
    def put_file(self, name: str, path: str, size_bytes: int, xxh3: str) -> None:
        """Store the file at ``path`` (large: multipart where the remote has it) whole or not at all."""

    @abstractmethod
    def get_bytes(self, name: str) -> bytes:
        """The object's bytes; a missing one is a :class:`SyncError` naming it."""

    @abstractmethod
    def get_file(self, name: str, dest: str) -> None:
        """Write the object into the new file ``dest`` (large objects: ranged, in parallel)."""

    @abstractmethod
    def list_manifest_names(self) -> list[str]:
        """Names under ``manifests/``."""

    @abstractmethod
    def create_manifest(self, name: str, data: bytes) -> bool:
        """Create ``name`` only if it does not exist yet: False when it already does (another push took it)."""

    def latest_manifest_seq(self) -> int | None:
        seqs = [s for s in (parse_manifest_name(n) for n in self.list_manifest_names()) if s is not None]
        return max(seqs) if seqs else None

    def close(self) -> None:
        pass


class VolumeRemote(Remote):
    """A directory, typically on a mounted network or cloud volume.

    Objects are written to ``tmp/`` and renamed into place, so a reader (or a resumed push)
    never sees half an object. The manifest is created with ``link()``, which fails if the
    name exists: the create-only commit, atomic on local filesystems and on NFS.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool, must_exist: bool = True) -> None:
        self.path = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
        self.url = str(self.path)
        if self.path.exists() and not self.path.is_dir():
            raise RemoteConfigError(f"remote '{self.path}' is a file, not a directory; give a directory or s3://bucket/prefix")
        if not self.path.is_dir() and (create or must_exist):
            if not create:
                raise RemoteConfigError(f"remote '{self.path}' does not exist; check the path (is the volume mounted?)")
            try:
                self.path.mkdir(parents=True)
            except OSError as exc:
                raise RemoteConfigError(f"cannot create remote directory '{self.path}': {exc.strerror}; check the path and permissions") from None
        self._made: set[str] = set()
        self._lock = threading.Lock()

    def _tmp_path(self) -> str:
        tmp = self.path / "tmp"
        tmp.mkdir(exist_ok=True)
        return str(tmp / f"{os.getpid()}-{uuid.uuid4().hex}")

    def _ensure_dir(self, rel: str) -> None:
        if rel in self._made:
            return
        (self.path / rel).mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._made.add(rel)

    def _place(self, tmp: str, name: str) -> None:
        self._ensure_dir(os.path.dirname(name))
        os.rename(tmp, self.path / name)

    def list_objects(self) -> Iterator[tuple[str, int]]:
        objects = self.path / "objects"
        if not objects.is_dir():
            return
        for shard in os.scandir(objects):
            if not shard.is_dir(follow_symlinks=False):
                continue
            for e in os.scandir(shard.path):
                try:
                    yield f"objects/{shard.name}/{e.name}", e.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue

    def _write_tmp(self, data: bytes) -> str:
        """``data`` in a new durable temporary file of this remote; its path."""
        tmp = self._tmp_path()
        try:
            with open(tmp, "xb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            _unlink_quiet(tmp)
            raise
        return tmp

    def put_bytes(self, name: str, data: bytes, xxh3: str) -> None:
        tmp = self._write_tmp(data)
        try:
            self._place(tmp, name)
        except BaseException:
            _unlink_quiet(tmp)
            raise

    def put_file(self, name: str, path: str, size_bytes: int, xxh3: str) -> None:
        tmp = self._tmp_path()
        try:
            with open(path, "rb") as src, open(tmp, "xb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
                dst.flush()
                os.fsync(dst.fileno())
            self._place(tmp, name)
        except BaseException:
            _unlink_quiet(tmp)
            raise

    def get_bytes(self, name: str) -> bytes:
        try:
            with open(self.path / name, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            raise SyncError(f"object {name} is missing from remote '{self.url}'; push the cache again") from None

    def get_file(self, name: str, dest: str) -> None:
        try:
            src = open(self.path / name, "rb")
        except FileNotFoundError:
            raise SyncError(f"object {name} is missing from remote '{self.url}'; push the cache again") from None
        with src, open(dest, "xb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)

    def list_manifest_names(self) -> list[str]:
        d = self.path / "manifests"
        return [f"manifests/{n}" for n in os.listdir(d)] if d.is_dir() else []

    def create_manifest(self, name: str, data: bytes) -> bool:
        tmp = self._write_tmp(data)
        try:
            self._ensure_dir("manifests")
            try:
                os.link(tmp, self.path / name)  # fails with EEXIST: create-only
            except FileExistsError:
                return False
            _fsync_dir(self.path / "manifests")
            return True
        finally:
            _unlink_quiet(tmp)


def open_remote(url: str, *, create: bool = False, must_exist: bool = True, workers: int = 16) -> Remote:
    """``s3://bucket/prefix`` or a directory path (``file://`` accepted); a push's dry run passes neither
    ``create`` nor ``must_exist``: a directory not made yet is an empty remote."""
    if not url or not url.strip():
        raise RemoteConfigError("no remote given: pass s3://bucket/prefix or a directory, or set [cache] remote")
    if url.startswith("s3://"):
        from .s3 import S3Remote

        return S3Remote(url, workers=workers)
    if "://" in url and not url.startswith("file://"):
        scheme = url.split("://", 1)[0]
        raise RemoteConfigError(f"remote {url!r}: scheme '{scheme}://' is not supported; use s3://bucket/prefix or a directory path")
    if url.startswith("file://"):
        url = url[len("file://"):]
    return VolumeRemote(url, create=create, must_exist=must_exist)


def _unlink_quiet(path: str | os.PathLike[str]) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
