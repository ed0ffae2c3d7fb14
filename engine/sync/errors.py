"""What can go wrong moving a cache to or from a remote; each a one-line message naming the fix."""

from __future__ import annotations

from ..errors import CachewatchError

__all__ = ["SyncError", "RemoteConfigError", "ForeignObject", "ManifestTooLarge", "NoManifest"]


class SyncError(CachewatchError):
    """A push or pull could not be done (network, server); exit 1."""

    exit_code = 1


class RemoteConfigError(SyncError):
    """The remote cannot be used as given: bad URL, no or wrong credentials, no bucket; exit 2."""

    exit_code = 2


class ForeignObject(SyncError):
    """Something at the remote is not what a cachewatch push writes (or was damaged there)."""

    exit_code = 1


class ManifestTooLarge(SyncError):
    """The pushed cache does not fit under the local cache's max_size; nothing was downloaded."""

    exit_code = 2


class NoManifest(SyncError):
    """Nothing was ever pushed (committed) at that remote."""

    exit_code = 1
