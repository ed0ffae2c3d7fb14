"""Training panel: the supervised command, its state, progress and ETA, and its processes.

What seed 000 computed by hand (epoch 4 of 15, 3.23 h per epoch, 38.8 h left, finish on
21 December at 00:54) is read here from the engine's progress snapshot; the DataLoader
workers and their CPU and memory come from the process tree the engine samples.
"""

from __future__ import annotations

import shlex
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from cachewatch.engine.daemon.snapshot import EngineSnapshot
from cachewatch.engine.training.runstate import TrainingInfo

from .. import format as fmt
from .panel import Panel

__all__ = ["TrainingPanel", "state_text", "display_command"]

_STATE_STYLE = {
    "running": "bold green",
    "paused": "bold yellow",
    "starting": "cyan",
    "restarting": "bold yellow",
    "exited": "bold",
    "stopped": "bold",
    "failed": "bold red",
}


def state_text(training: TrainingInfo | None, now: float) -> Text:
    """``● running`` / ``■ exited with code 1`` / ``⏸ paused 2m 10s``: the state as one phrase."""
    if training is None:
        return Text("no training: this engine watches the cache only", style="dim")
    state = training.state.value
    style = _STATE_STYLE.get(state, "bold")
    text = Text()
    if state == "running":
        text.append("● running", style)
        if training.pid:
            text.append(f"  pid {training.pid}", "dim")
    elif state == "paused":
        since = training.paused_since
        text.append("⏸ paused", style)
        if since is not None:
            text.append(f" for {fmt.duration(now - since)}", style)
    elif state == "restarting":
        text.append("↻ restarting", style)
        if training.next_restart_at is not None:
            text.append(f" in {fmt.duration(training.next_restart_at - now)}", style)
    elif state in ("exited", "stopped", "failed"):
        text.append("■ ", style)
        if training.exit_reason:
            text.append(training.exit_reason, "bold red" if _failed(training) else style)
        elif training.signal:
            text.append(f"killed by {training.signal}", "bold red")
        else:
            text.append(f"{state} with code {training.exit_code}", "bold red" if training.exit_code else style)
        if training.launch_error:
            text.append(f": {training.launch_error}", "red")
    else:
        text.append(state, style)
    return text


def display_command(argv: tuple[str, ...]) -> str:
    """The command as people recognise it: ``python3 train_cached.py --epochs 60`` rather than the
    full interpreter and script paths, which fill a narrow panel before the arguments show."""
    out = list(argv)
    for i, arg in enumerate(out[:2]):
        if "/" in arg and not arg.startswith("-"):
            out[i] = arg.rsplit("/", 1)[-1]
    return shlex.join(out)


def _failed(training: TrainingInfo) -> bool:
    return training.state.value == "failed" or bool(training.signal) or bool(training.exit_code)


def _ratio_bar(done: int | None, total: int | None, width: int) -> Text:
    if done is None or not total:
        return Text("")
    return fmt.gauge(width, done, total, style="blue")


class TrainingPanel(Panel):
    TITLE = "Training"

    def draw(self, snap: EngineSnapshot, width: int) -> RenderableType:
        now = snap.time
        t = snap.training
        lines: list[RenderableType] = []
        if t is not None:
            lines.append(fmt.one_line(Text(display_command(t.command), style="bold")))
            head = fmt.one_line(state_text(t, now))
            extra = []
            if t.attempt > 1 or t.restarts:
                extra.append(f"restarts {t.restarts}")
            if extra:
                head.append("  " + " · ".join(extra), "dim")
            lines.append(head)
        else:
            lines.append(state_text(None, now))
        lines.extend(self._progress(snap, width))
        lines.extend(self._workers(snap, width, room=self.content_size.height - len(lines) - 1))
        return Group(*lines)

    def _progress(self, snap: EngineSnapshot, width: int) -> list[RenderableType]:
        p = snap.progress
        if p is None:
            return [Text("no progress seen yet (report API or Epoch/tqdm output)", style="dim")]
        out: list[RenderableType] = []
        epoch, epochs = p.epoch, p.total_epochs
        step, steps = p.step, p.total_steps
        loss = p.loss
        eta = p.eta
        epoch_label = (f"epoch {epoch}/{epochs}" if epochs else f"epoch {epoch}") if epoch is not None else ""
        step_label = (f"step {step}/{steps}" if steps else f"step {step}") if step is not None else ""
        pad = max(len(epoch_label), len(step_label)) + 1
        if epoch is not None:
            line = Text(f"{epoch_label:<{pad}}")
            done = eta.fraction_done
            if done is None and epochs:
                done = (epoch - 1) / epochs
            if done is not None:
                line.append_text(fmt.gauge(max(4, width - pad - 5), done, 1.0, style="blue"))
                line.append(f" {done * 100:3.0f}%")
            out.append(fmt.one_line(line))
        if step is not None:
            tail = f" loss {loss:.4g}" if isinstance(loss, (int, float)) else ""
            line = Text(f"{step_label:<{pad}}")
            bar_width = max(4, width - pad - len(tail))
            line.append_text(_ratio_bar(step, steps, bar_width))
            line.append(tail, "bold")
            out.append(fmt.one_line(line))
        elif isinstance(loss, (int, float)):
            out.append(Text(f"loss {loss:.4g}", style="bold"))
        remaining = eta.remaining_s
        finish = eta.finish_time
        step_s = eta.step_s
        avg_epoch = eta.avg_epoch_s
        eta_state, total_s = eta.state, eta.training_s
        epoch_left = eta.epoch_remaining_s
        line = fmt.one_line(Text())
        if eta_state in ("finished", "stopped", "failed", "exited"):
            # Over: how it ended and its total time instead of an ETA (issue 10 item 5).
            line.append(str(eta_state), "bold")
            if total_s is not None:
                line.append(f" after {fmt.duration(total_s)}")
        elif remaining is not None:
            line.append("ETA ", "bold")
            line.append(fmt.duration(remaining), "bold cyan")
            if finish is not None:
                line.append(f" → {fmt.finish_time(finish, snap.time)}", "cyan")
            if eta_state == "paused":
                line.append(" (paused)", "yellow")
        elif epoch_left is not None:
            line.append(f"epoch ends in {fmt.duration(epoch_left)}", "cyan")
        else:
            line.append("ETA --", "dim")
        out.append(line)
        line = fmt.one_line(Text())
        if step_s is not None:
            line.append(f"{step_s:.3g} s/batch")
        if avg_epoch is not None:
            line.append((" · " if len(line) else "") + f"epoch avg {fmt.duration(avg_epoch)}")
        if len(line):
            out.append(line)
        return out

    def _workers(self, snap: EngineSnapshot, width: int, room: int) -> list[RenderableType]:
        """The summary line; and the per-process table in the rows left (``room``), when there are any."""
        tree = snap.workers
        if tree is None:
            return []
        processes = tree.processes
        workers = [p for p in processes if p.role == "worker"]
        cpu = [p.cpu_percent for p in processes]
        rss = sum(p.rss_bytes or 0 for p in processes)
        line = fmt.one_line(Text())
        line.append(f"workers {len(workers)}", "bold")
        known_cpu = [c for c in cpu if c is not None]
        line.append(f" · CPU {sum(known_cpu):.0f}%" if known_cpu else " · CPU --")
        line.append(f" · RSS {fmt.gib(rss)}")
        out: list[RenderableType] = [line]
        if room >= 2 and processes:
            # Padded text rather than a rich Table (see eviction_log.py: cheaper to draw).
            shown = processes if len(processes) <= room - 1 else processes[: max(0, room - 2)]
            rows = []
            for proc in shown:
                c = proc.cpu_percent
                rows.append((str(proc.pid), proc.role,
                             "--" if c is None else f"{c:.0f}%", fmt.gib(proc.rss_bytes)))
            w = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(("pid", "role", "CPU", "RSS"))]
            table = [fmt.one_line(Text(f"{'pid':>{w[0]}} {'role':<{w[1]}} {'CPU':>{w[2]}} {'RSS':>{w[3]}}", style="dim"))]
            for pid, role, cpu_s, rss_s in rows:
                line = Text(f"{pid:>{w[0]}}", style="dim")
                line.append(f" {role:<{w[1]}} {cpu_s:>{w[2]}} {rss_s:>{w[3]}}")
                table.append(fmt.one_line(line))
            if len(shown) < len(processes):
                table.append(fmt.one_line(Text(f"{'':>{w[0]}} +{len(processes) - len(shown)} more", style="dim")))
            out.extend(table)
        return out
