"""Push a cache to object storage or a mounted volume and pull it back, every byte verified.

``push(cache, remote)`` / ``pull(cache, remote)`` are plain functions with a progress
callback; ``open_remote(url)`` gives the remote (``s3://bucket/prefix`` or a directory).
The layout at the remote and the commit protocol are in :mod:`.manifest`; docs/sync.md
has the whole story.
"""

from .errors import ForeignObject, ManifestTooLarge, NoManifest, RemoteConfigError, SyncError
from .manifest import Manifest, ManifestEntry, SourceFingerprint
from .remote import Remote, VolumeRemote, open_remote
from .transfer import SyncProgress, SyncReport, pull, push, read_latest_manifest, source_fingerprint

__all__ = [
    "push", "pull", "open_remote", "read_latest_manifest", "source_fingerprint",
    "Remote", "VolumeRemote", "Manifest", "ManifestEntry", "SourceFingerprint", "SyncProgress", "SyncReport",
    "SyncError", "RemoteConfigError", "ForeignObject", "ManifestTooLarge", "NoManifest",
]
