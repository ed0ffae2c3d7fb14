"""Maintenance jobs (verify, build, split): progress while they run, the outcome once done."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text
from textual.geometry import Size
from textual.widget import Widget

from cachewatch.engine.daemon.snapshot import EngineSnapshot, JobView

from .. import format as fmt

__all__ = ["JobsBar", "job_outcome"]

_RECENT_S = 120.0  # a finished job stays in the bar this long


def job_outcome(job: JobView) -> tuple[str, str]:
    """``(one line, style)`` for a finished job."""
    if job.state == "failed":
        return f"{job.kind} failed: {job.error or 'see the engine log'}", "bold red"
    if job.state == "cancelled":
        return f"{job.kind} cancelled" + (f": {job.error}" if job.error else ""), "yellow"
    result = job.result
    if job.kind == "verify":
        if result.get("ok"):
            return "verify: the cache is clean", "bold green"
        remaining = result.get("remaining") or {}
        n = sum(int(v) for v in remaining.values()) if remaining else len(result.get("problems") or ())
        return f"verify: {n} problems", "bold red"
    if job.kind == "split":
        return ("split: done" if result.get("ok", True) else "split: some inputs failed"), (
            "bold green" if result.get("ok", True) else "bold red")
    return f"{job.kind}: done", "bold green"


class JobsBar(Widget):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.jobs: tuple[JobView, ...] = ()
        self.now = 0.0

    def show(self, snap: EngineSnapshot | None) -> None:
        if snap is None:
            return
        jobs = tuple(j for j in snap.jobs if j.state == "running" or (j.ended is not None and snap.time - j.ended < _RECENT_S))
        jobs = tuple(j for j in jobs if j.state == "running") + tuple(j for j in jobs if j.state != "running")[:1]
        if jobs == self.jobs:
            return
        shown_before = len(self.jobs)
        self.jobs, self.now = jobs, snap.time
        self.display = bool(jobs)
        self.refresh(layout=len(jobs) != shown_before)  # a new height only when the count changes

    def render(self) -> RenderableType:
        width = max(20, self.content_size.width)
        lines = []
        for j in self.jobs:
            line = Text(f" {j.id} ", style="bold")
            if j.state == "running":
                figures = f" {j.done}/{j.total} {j.unit}".rstrip() if j.total else f" {j.done} {j.unit}".rstrip()
                bar_w = max(8, min(40, width // 3))
                if j.total:
                    line.append_text(fmt.gauge(bar_w, j.done, j.total, style="cyan"))
                else:
                    line.append("running", "cyan")
                line.append(figures)
                if j.message:
                    line.append("  " + fmt.shorten(j.message, max(0, width - len(line) - 2)), "dim")
                line.append("  c: cancel", "dim")
            else:
                text, style = job_outcome(j)
                line.append(text, style)
            lines.append(line)
        return Group(*lines)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self.jobs)
