"""``cachewatch monitor``: one reading of the GPUs, a training's process tree, memory and the cache's disk.

For a look without the dashboard or a running engine, like ``nvidia-smi`` plus ``ps``
for the training. Two samples ``--interval`` apart (CPU percent is a rate). Exit code
1 when an alert is on (memory or disk above its threshold, a GPU lost), so a script
can act on it.
"""

from __future__ import annotations

import argparse
import time

import psutil

from ..config import load_config
from ..errors import ConfigError
from ..sizes import format_size, parse_duration, SizeError
from . import EXIT_OK, EXIT_PROBLEMS, count, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("monitor", help="one reading of GPUs, a training's processes, memory and disk",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pid", type=int, metavar="PID", help="the training's root process (its workers are found below it)")
    p.add_argument("--path", metavar="DIR", help="directory whose disk to report (default: [cache] root of the config)")
    p.add_argument("--interval", metavar="SECONDS", default="1s", help="time between the two samples (default 1s)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_monitor)


def cmd_monitor(args: argparse.Namespace) -> int:
    from ..monitor import Monitor  # psutil and the samplers only for this command

    cfg = load_config(getattr(args, "config", None))
    try:
        interval = parse_duration(args.interval, what="--interval")
    except SizeError as exc:
        raise ConfigError(str(exc)) from None
    if args.pid is not None and (args.pid <= 0 or not psutil.pid_exists(args.pid)):
        raise ConfigError(f"--pid {args.pid}: no such process; give the training's pid (e.g. from `pgrep -f train.py`)")
    monitor = Monitor(
        disk_path=args.path if args.path else cfg.cache.root,
        root_pid=args.pid,
        memory_alert=cfg.monitor.memory_alert,
        disk_alert=cfg.monitor.disk_alert,
        gpu=cfg.monitor.gpu,
    )
    try:
        monitor.sample()
        time.sleep(interval)
        snap = monitor.sample()
    finally:
        monitor.stop()
    problems = bool(snap.host.alerts) or any(g.lost for g in snap.gpu.gpus)
    if args.json:
        print_json(snap.to_json())
        return EXIT_PROBLEMS if problems else EXIT_OK

    gpu = snap.gpu
    if not gpu.available:
        print(f"GPU      none: {gpu.reason}")
    for g in gpu.gpus:
        if g.lost:
            print(f"GPU {g.index}    {g.name or '?'}: LOST ({g.missing[0].reason if g.missing else 'no answer'})")
            continue
        mem = (f"{format_size(g.memory_used_bytes)} / {format_size(g.memory_total_bytes)}"
               if g.memory_used_bytes is not None and g.memory_total_bytes else "memory ?")
        bits = [f"{g.utilization_percent} % busy" if g.utilization_percent is not None else "busy ?", mem]
        if g.temperature_c is not None:
            bits.append(f"{g.temperature_c} °C")
        if g.power_w is not None:
            bits.append(f"{g.power_w:.0f} W" + (f" / {g.power_limit_w:.0f} W" if g.power_limit_w else ""))
        if args.pid is not None:
            mine = g.training_memory_bytes
            bits.append(f"training {format_size(mine)}" if mine is not None else "training ?")
        print(f"GPU {g.index}    {g.name}: " + ", ".join(bits))
    tree = snap.tree
    if args.pid is not None:
        if not tree.root_alive:
            print(f"training {tree.reason}")
        else:
            cpu = f"{tree.cpu_percent_total:.0f} % of a core" if tree.cpu_percent_total is not None else "CPU ?"
            print(f"training pid {tree.root_pid}: {count(len(tree.processes), 'process', 'processes')}, "
                  f"{count(tree.worker_count, 'worker')} "
                  f"({tree.worker_detection}), {cpu}, RSS {format_size(tree.rss_bytes_total)}")
            for p in tree.processes:
                pc = f"{p.cpu_percent:5.0f} %" if p.cpu_percent is not None else "    ? "
                rss = format_size(p.rss_bytes) if p.rss_bytes is not None else "?"
                print(f"  {p.pid:>8} {p.role:<6} {pc} {rss:>10}  {p.name}")
    host = snap.host
    m = host.memory
    print(f"memory   {m.percent:.0f} % used, {format_size(m.available_bytes)} available of {format_size(m.total_bytes)}"
          + (f"; swap {format_size(host.swap.used_bytes)} / {format_size(host.swap.total_bytes)}" if host.swap.total_bytes else ""))
    if host.disk is not None:
        d = host.disk
        print(f"disk     {d.percent:.0f} % used, {format_size(d.free_bytes, binary=False)} free of {format_size(d.total_bytes, binary=False)} ({d.path})")
    else:
        print(f"disk     {host.disk_reason}")
    for alert in host.alerts:
        print(f"ALERT    {alert.message}")
    return EXIT_PROBLEMS if problems else EXIT_OK
