"""The watchdog side: turn filesystem events under the root into index updates.

Only the event kinds the index needs are asked for (watchdog builds the inotify
mask from the filter, so the kernel does not even queue close or attribute-only
events for us). Each event is handed to a :class:`EventSink` (the watcher) with
paths relative to the root. Opens count as uses: that keeps the LRU order right
on ``noatime``/``relatime`` mounts while we watch.

Lost events: when the kernel queue overflows, watchdog rebuilds its watches and
logs a warning but tells handlers nothing, so a logging handler on watchdog's
logger catches that warning and asks every live watcher for a reconciling scan.
The periodic scan is the backstop if that message ever changes.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Protocol

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

__all__ = ["EventSink", "WatchEventHandler", "start_observer", "EVENT_FILTER"]

EVENT_FILTER = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]


class EventSink(Protocol):
    def file_changed(self, rel: str) -> None: ...
    def file_opened(self, rel: str) -> None: ...
    def file_deleted(self, rel: str) -> None: ...
    def file_moved(self, src: str, dst: str | None) -> None: ...
    def dir_created(self, rel: str) -> None: ...
    def dir_deleted(self, rel: str) -> None: ...
    def dir_moved(self, src: str, dst: str | None) -> None: ...
    def root_gone(self) -> None: ...
    def events_lost(self) -> None: ...


class WatchEventHandler(FileSystemEventHandler):
    """Dispatches watchdog events for one root to an :class:`EventSink`."""

    def __init__(self, root: str, sink: EventSink) -> None:
        super().__init__()
        self.root = root.rstrip("/") or "/"
        self._prefix = self.root + "/" if self.root != "/" else "/"
        self.sink = sink

    def _rel(self, path: str | bytes) -> str | None:
        if isinstance(path, bytes):  # pragma: no cover - we schedule str paths
            path = path.decode("utf-8", "surrogateescape")
        if not path:
            return None
        if path.startswith(self._prefix):
            return path[len(self._prefix) :]
        if path == self.root:
            return ""
        return None

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self._dispatch(event)
        except Exception:  # an odd event must never kill the observer thread
            logging.getLogger(__name__).exception("watch: failed to apply %r", event)

    def _dispatch(self, event: FileSystemEvent) -> None:
        rel = self._rel(event.src_path)
        et = event.event_type
        if event.is_directory:
            if et == "created" and rel:
                self.sink.dir_created(rel)
            elif et == "deleted":
                if rel == "":
                    self.sink.root_gone()
                elif rel is not None:
                    self.sink.dir_deleted(rel)
            elif et == "moved" and rel:
                self.sink.dir_moved(rel, self._rel(event.dest_path) or None)
            return
        if not rel:
            return
        if et == "opened":
            self.sink.file_opened(rel)
        elif et in ("created", "modified"):
            self.sink.file_changed(rel)
        elif et == "deleted":
            self.sink.file_deleted(rel)
        elif et == "moved":
            self.sink.file_moved(rel, self._rel(event.dest_path) or None)


# ------------------------------------------------------------------ lost events
_overflow_sinks: "weakref.WeakSet[object]" = weakref.WeakSet()
_overflow_lock = threading.Lock()
_overflow_installed = False


class _OverflowHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:  # pragma: no cover
            return
        if "overflow" in msg.lower():
            for sink in list(_overflow_sinks):
                sink.events_lost()  # type: ignore[attr-defined]


def _install_overflow_hook() -> None:
    global _overflow_installed
    with _overflow_lock:
        if _overflow_installed:
            return
        handler = _OverflowHandler(level=logging.WARNING)
        for name in ("watchdog.observers.inotify_c", "watchdog.observers.inotify"):
            lg = logging.getLogger(name)
            lg.addHandler(handler)
            if lg.getEffectiveLevel() > logging.WARNING:
                lg.setLevel(logging.WARNING)
        _overflow_installed = True


def start_observer(root: str, sink: EventSink) -> Observer:
    """A started watchdog observer delivering events under ``root`` (a resolved directory) to ``sink``."""
    _install_overflow_hook()
    _overflow_sinks.add(sink)  # type: ignore[arg-type]
    observer = Observer()
    observer.daemon = True
    observer.schedule(WatchEventHandler(root, sink), root, recursive=True, event_filter=EVENT_FILTER)
    observer.start()
    return observer
