"""GPU panel: per GPU utilization and memory (gauge and sparkline), temperature, power, and
the training's own GPU memory; host memory under it. "no GPU" is a normal state, said plainly.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from cachewatch.engine.daemon.snapshot import EngineSnapshot, part_value

from .. import format as fmt
from .panel import Panel

__all__ = ["GpuPanel", "no_gpu_text"]

def no_gpu_text(gpu: Any) -> Text:
    if gpu is None:
        return Text("no GPU figures: this engine does not sample GPUs", style="bold")
    state = part_value(gpu, "state", default="")
    words = "GPU error" if state == "error" else ("GPU sampling off" if state == "disabled" else "no GPU")
    text = Text(words, style="bold red" if state == "error" else "bold")
    reason = part_value(gpu, "reason")
    if reason:
        text.append(f" ({reason})", "dim")
    return text


class GpuPanel(Panel):
    TITLE = "GPU · host"

    def draw(self, snap: EngineSnapshot, width: int) -> RenderableType:
        lines: list[RenderableType] = []
        gpu = snap.gpu
        gpus = part_value(gpu, "gpus", default=()) or ()
        if gpu is None or part_value(gpu, "state") != "ok" or not gpus:
            lines.append(no_gpu_text(gpu))
        else:
            for g in gpus:
                lines.extend(self._one(g, width))
            total = part_value(gpu, "training_gpu_memory_bytes")
            if total is not None and len(gpus) > 1:
                lines.append(Text(f"training, all GPUs: {fmt.gib(total)}"))
        lines.extend(self._host(snap))
        return Group(*lines)

    def _one(self, g: Any, width: int) -> list[RenderableType]:
        index = part_value(g, "index", default=0)
        head = Text(f"GPU{index} ", style="bold")
        if part_value(g, "lost"):
            head.append("LOST: fell off the bus, needs a reset", "bold white on red")
            return [fmt.one_line(head)]
        tail = ""
        temp = part_value(g, "temperature_c")
        power, limit = part_value(g, "power_w"), part_value(g, "power_limit_w")
        if temp is not None:
            tail += f"  {temp}°C"
        if power is not None:
            tail += f"  {power:.0f}" + (f"/{limit:.0f}" if limit else "") + " W"
        name = str(part_value(g, "name", default="") or "").replace("NVIDIA ", "").replace("GeForce ", "")
        head.append(fmt.shorten(name, max(0, width - len(head) - len(tail))))
        head.append(tail)
        lines: list[RenderableType] = [fmt.one_line(head)]

        util = part_value(g, "utilization_percent")
        used, total = part_value(g, "memory_used_bytes"), part_value(g, "memory_total_bytes")
        util_fig = f" {util:>3}%" if util is not None else "  --"
        mem_fig = f" {fmt.gib(used)}/{fmt.gib(total)}"
        fig_w = max(len(util_fig), len(mem_fig))
        room = width - 5 - fig_w  # "util " / "mem  " and the figures
        spark_w = min(30, room // 2) if room >= 20 else 0
        bar_w = max(4, room - (spark_w + 1 if spark_w else 0))

        line = Text("util ")
        line.append_text(fmt.gauge(bar_w, util or 0, 100, style="green"))
        line.append(util_fig.ljust(fig_w))
        if spark_w:
            line.append(" ")
            line.append_text(fmt.sparkline(self.history.gpu_util_percent.get(index, ()), spark_w, maximum=100))
        lines.append(fmt.one_line(line))

        full = used is not None and bool(total) and used / total >= 0.95
        line = Text("mem  ")
        line.append_text(fmt.gauge(bar_w, used or 0, total or 1, style="red" if full else "magenta"))
        line.append(mem_fig.ljust(fig_w), "bold red" if full else "")
        if spark_w:
            line.append(" ")
            line.append_text(fmt.sparkline(self.history.gpu_memory_bytes.get(index, ()), spark_w,
                                           maximum=float(total) if total else None, style="magenta"))
        lines.append(fmt.one_line(line))
        mine = part_value(g, "training_memory_bytes")
        if mine is not None:
            lines.append(Text(f"training uses {fmt.gib(mine)}", style="dim"))
        return lines

    def _host(self, snap: EngineSnapshot) -> list[RenderableType]:
        host = snap.host
        if host is None:
            return []
        mem = part_value(host, "memory")
        total = part_value(mem, "total_bytes")
        if not total:
            return []
        pct = part_value(mem, "percent", default=0.0) or 0.0
        avail = part_value(mem, "available_bytes", default=0) or 0
        alerting = any(part_value(a, "kind") == "memory" for a in (part_value(host, "alerts", default=()) or ()))
        line = Text("RAM ", style="bold")
        line.append(f"{fmt.gib(total - avail)}/{fmt.gib(total)} ({pct:.0f}%)", "bold red" if alerting else "")
        swap = part_value(host, "swap")
        swap_used = part_value(swap, "used_bytes")
        if swap_used:
            line.append(f" · swap {fmt.gib(swap_used)}")
        cpu = part_value(host, "cpu_percent")
        if cpu is not None:
            line.append(f" · CPU {cpu:.0f}%")
        return [fmt.one_line(line)]
