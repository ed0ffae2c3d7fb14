"""Alerts that need a person: a coloured band at the top of the screen until dismissed.

It takes one line per alert (two at most, then a count), so it stands out at 80x24
without pushing the panels off the screen; ``a`` opens the newest in full, ``d``
dismisses it.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text
from textual.geometry import Size
from textual.widget import Widget

from cachewatch.engine.daemon.snapshot import Alert, EngineSnapshot

from .. import format as fmt

__all__ = ["AlertBanner", "shown_alerts", "SEVERITY_STYLE", "SEVERITY_MARK"]

SEVERITY_STYLE = {
    "critical": "bold white on red",
    "error": "bold white on dark_red",
    "warning": "bold black on yellow",
    "info": "white on blue",
}
SEVERITY_MARK = {"critical": "✖", "error": "✖", "warning": "▲", "info": "●"}
_RANK = {"critical": 0, "error": 1, "warning": 2, "info": 3}
_MAX_LINES = 2


def shown_alerts(snap: EngineSnapshot | None) -> tuple[Alert, ...]:
    """Alerts not dismissed and still holding, most severe first, then newest."""
    if snap is None:
        return ()
    alerts = [a for a in snap.alerts if not a.dismissed and a.active]
    alerts.sort(key=lambda a: (_RANK.get(a.severity, 9), -a.last_time))
    return tuple(alerts)


class AlertBanner(Widget):
    def __init__(self, *, id: str | None = None, readonly: bool = False) -> None:
        super().__init__(id=id)
        self.alerts: tuple[Alert, ...] = ()
        self.readonly = readonly

    def show(self, snap: EngineSnapshot | None) -> None:
        alerts = shown_alerts(snap)
        if alerts == self.alerts:
            return
        shown_before = min(len(self.alerts), _MAX_LINES)
        self.alerts = alerts
        self.display = bool(alerts)
        self.refresh(layout=min(len(alerts), _MAX_LINES) != shown_before)  # a new height only when the count changes

    def render(self) -> RenderableType:
        width = max(10, self.content_size.width)
        lines = []
        keys = "  a: details" + ("" if self.readonly else "  d: dismiss")
        for i, a in enumerate(self.alerts[:_MAX_LINES]):
            style = SEVERITY_STYLE.get(a.severity, "bold")
            head = f" {SEVERITY_MARK.get(a.severity, '!')} {a.title}"
            if a.count > 1:
                head += f" (x{a.count})"
            body = f": {a.text}" if a.text else ""
            tail = keys if i == 0 else ""
            more = len(self.alerts) - _MAX_LINES
            if i == _MAX_LINES - 1 and more > 0:
                tail = f"  +{more} more"
            room = width - len(head) - len(tail)
            line = Text(head, style=style)
            line.append(fmt.shorten(body, max(0, room)), style)
            line.append(" " * max(0, room - len(fmt.shorten(body, max(0, room)))), style)
            line.append(tail, style + " reverse" if tail else style)
            lines.append(line)
        return Group(*lines)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return min(len(self.alerts), _MAX_LINES)
