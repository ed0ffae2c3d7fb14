"""GPU panel: per GPU utilization and memory (gauge and sparkline), temperature, power, and
the training's own GPU memory; host memory under it. "no GPU" is a normal state, said plainly.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text

from cachewatch.engine.daemon.snapshot import EngineSnapshot
from cachewatch.engine.monitor.gpu import GpuInfo, GpuSnapshot

from .. import format as fmt
from .panel import Panel

__all__ = ["GpuPanel", "no_gpu_text"]

def no_gpu_text(gpu: GpuSnapshot | None) -> Text:
    if gpu is None:
        return Text("no GPU figures: this engine does not sample GPUs", style="bold")
    state = gpu.state
    words = "GPU error" if state == "error" else ("GPU sampling off" if state == "disabled" else "no GPU")
    text = Text(words, style="bold red" if state == "error" else "bold")
    reason = gpu.reason
    if reason:
        text.append(f" ({reason})", "dim")
    return text


class GpuPanel(Panel):
    TITLE = "GPU · host"

    def draw(self, snap: EngineSnapshot, width: int) -> RenderableType:
        lines: list[RenderableType] = []
        gpu = snap.gpu
        gpus = gpu.gpus if gpu is not None else ()
        if gpu is None or gpu.state != "ok" or not gpus:
            lines.append(no_gpu_text(gpu))
        else:
            for g in gpus:
                lines.extend(self._one(g, width))
            total = gpu.training_gpu_memory_bytes
            if total is not None and len(gpus) > 1:
                lines.append(Text(f"training, all GPUs: {fmt.gib(total)}"))
        lines.extend(self._host(snap))
        return Group(*lines)

    def _one(self, g: GpuInfo, width: int) -> list[RenderableType]:
        index = g.index
        head = Text(f"GPU{index} ", style="bold")
        if g.lost:
            head.append("LOST: fell off the bus, needs a reset", "bold white on red")
            return [fmt.one_line(head)]
        tail = ""
        temp = g.temperature_c
        power, limit = g.power_w, g.power_limit_w
        if temp is not None:
            tail += f"  {temp}°C"
        if power is not None:
            tail += f"  {power:.0f}" + (f"/{limit:.0f}" if limit else "") + " W"
        name = (g.name or "").replace("NVIDIA ", "").replace("GeForce ", "")
        head.append(fmt.shorten(name, max(0, width - len(head) - len(tail))))
        head.append(tail)
        lines: list[RenderableType] = [fmt.one_line(head)]

        util = g.utilization_percent
        used, total = g.memory_used_bytes, g.memory_total_bytes
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

        full = used is not None and total is not None and total > 0 and used / total >= 0.95
        line = Text("mem  ")
        line.append_text(fmt.gauge(bar_w, used or 0, total or 1, style="red" if full else "magenta"))
        line.append(mem_fig.ljust(fig_w), "bold red" if full else "")
        if spark_w:
            line.append(" ")
            line.append_text(fmt.sparkline(self.history.gpu_memory_bytes.get(index, ()), spark_w,
                                           maximum=float(total) if total else None, style="magenta"))
        lines.append(fmt.one_line(line))
        mine = g.training_memory_bytes
        if mine is not None:
            lines.append(Text(f"training uses {fmt.gib(mine)}", style="dim"))
        return lines

    def _host(self, snap: EngineSnapshot) -> list[RenderableType]:
        host = snap.host
        if host is None:
            return []
        mem = host.memory
        total = mem.total_bytes
        if not total:
            return []
        pct = mem.percent
        avail = mem.available_bytes
        alerting = any(a.kind == "memory" for a in host.alerts)
        line = Text("RAM ", style="bold")
        line.append(f"{fmt.gib(total - avail)}/{fmt.gib(total)} ({pct:.0f}%)", "bold red" if alerting else "")
        swap_used = host.swap.used_bytes
        if swap_used:
            line.append(f" · swap {fmt.gib(swap_used)}")
        cpu = host.cpu_percent
        if cpu is not None:
            line.append(f" · CPU {cpu:.0f}%")
        return [fmt.one_line(line)]
