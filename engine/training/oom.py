"""Out-of-memory and crash diagnosis: CUDA OOM messages, host memory failures, exit statuses.

People found their OOMs by reading tracebacks (seed 001). Here the message is recognised
in the training's output, its figures are read (torch's old and new formats, KiB to GiB,
wrapped over several lines), and the alert says what to change. An exit by SIGKILL or
code 137 is reported as a probable host OOM kill, since that is what the kernel's OOM
killer and cgroup limits do to a training.
"""

from __future__ import annotations

import re
import signal as _signal
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from ..sizes import format_size

__all__ = [
    "CudaOomAlert",
    "HostOomAlert",
    "OomDetector",
    "ExitDiagnosis",
    "classify_exit",
    "parse_cuda_oom",
    "parse_host_oom",
    "cgroup_oom_kills",
]

_UNITS = {
    "bytes": 1,
    "byte": 1,
    "b": 1,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    # torch prints binary units; other tools' "MB"/"GB" next to GPU memory mean the same.
    "kb": 1024,
    "mb": 1024**2,
    "gb": 1024**3,
    "tb": 1024**4,
}
_SIZE = r"(\d+(?:\.\d+)?)\s*(bytes|byte|[KMGT]i?B|B)\b"


def _size(number: str, unit: str) -> int:
    return int(round(float(number) * _UNITS[unit.lower()]))


def _find_size(pattern: str, text: str) -> int | None:
    m = re.search(pattern.replace("SIZE", _SIZE), text, re.IGNORECASE)
    return _size(m.group(1), m.group(2)) if m else None


_CUDA_TRIGGER = re.compile(r"(?<![\"'])\b(CUDA|XPU) out of memory|CUDA error: out of memory|CUBLAS_STATUS_ALLOC_FAILED", re.IGNORECASE)
# The exception line itself, when the message after the colon is not the usual one.
_OOM_EXC = re.compile(r"^\s*(?:[\w.]+\.)?OutOfMemoryError:")
_CONTINUATION = re.compile(
    r"Tried to allocate|total capac|is free|memory in use|by PyTorch|If reserved|See documentation"
    r"|already allocated|reserved in total|PYTORCH_CUDA_ALLOC_CONF|of which|\bfree;|\bcached\)|empty_cache"
    r"|GPU \d+ has|^\s*\(GPU \d+;",
    re.IGNORECASE,
)
_TERMINAL = re.compile(r"See documentation for Memory Management.*|Please use `empty_cache`.*|max_split_size_mb to avoid fragmentation\.?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class CudaOomAlert:
    """A GPU out-of-memory error with the figures its message gave (None where it gave none)."""

    message: str
    device: str = "CUDA"
    gpu_index: int | None = None
    tried_to_allocate_bytes: int | None = None
    total_capacity_bytes: int | None = None
    free_bytes: int | None = None
    process_in_use_bytes: int | None = None
    allocated_by_pytorch_bytes: int | None = None
    reserved_unallocated_bytes: int | None = None
    reserved_total_bytes: int | None = None
    other_processes: tuple[tuple[int, int], ...] = ()  # (pid, bytes in use) named in the message
    message_format: str = "bare"  # "new" (torch >= 2.1), "old" (torch 1.x / 2.0), "bare" (no figures)
    remedies: tuple[str, ...] = ()

    kind = "cuda_oom"

    @property
    def fragmentation(self) -> bool:
        """PyTorch holds enough freed-but-cached memory for the request, yet could not use it."""
        unalloc = self.reserved_unallocated_bytes
        if not unalloc:
            return False
        if self.tried_to_allocate_bytes is not None and unalloc >= self.tried_to_allocate_bytes:
            return True
        return self.total_capacity_bytes is not None and unalloc >= 0.1 * self.total_capacity_bytes

    @property
    def other_processes_bytes(self) -> int | None:
        """GPU memory held by processes other than the failing one."""
        if self.other_processes:
            return sum(b for _, b in self.other_processes)
        if None in (self.total_capacity_bytes, self.free_bytes, self.process_in_use_bytes):
            return None
        return max(0, self.total_capacity_bytes - self.free_bytes - self.process_in_use_bytes)  # type: ignore[operator]

    def summary(self) -> str:
        where = f"GPU {self.gpu_index}" if self.gpu_index is not None else "the GPU"
        parts = [f"{self.device} out of memory on {where}"]
        if self.tried_to_allocate_bytes is not None:
            parts.append(f"tried to allocate {format_size(self.tried_to_allocate_bytes, precision=2)}")
        if self.free_bytes is not None and self.total_capacity_bytes is not None:
            parts.append(
                f"{format_size(self.free_bytes, precision=2)} free of {format_size(self.total_capacity_bytes, precision=2)}"
            )
        if self.allocated_by_pytorch_bytes is not None:
            parts.append(f"{format_size(self.allocated_by_pytorch_bytes, precision=2)} allocated by PyTorch")
        if self.reserved_unallocated_bytes is not None:
            parts.append(f"{format_size(self.reserved_unallocated_bytes, precision=2)} reserved but unallocated")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "device": self.device,
            "gpu_index": self.gpu_index,
            "tried_to_allocate_bytes": self.tried_to_allocate_bytes,
            "total_capacity_bytes": self.total_capacity_bytes,
            "free_bytes": self.free_bytes,
            "process_in_use_bytes": self.process_in_use_bytes,
            "allocated_by_pytorch_bytes": self.allocated_by_pytorch_bytes,
            "reserved_unallocated_bytes": self.reserved_unallocated_bytes,
            "reserved_total_bytes": self.reserved_total_bytes,
            "other_processes": [list(p) for p in self.other_processes],
            "message_format": self.message_format,
            "fragmentation": self.fragmentation,
            "summary": self.summary(),
            "remedies": list(self.remedies),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "CudaOomAlert":
        return cls(
            message=str(data.get("message", "")),
            device=str(data.get("device", "CUDA")),
            gpu_index=data.get("gpu_index"),
            tried_to_allocate_bytes=data.get("tried_to_allocate_bytes"),
            total_capacity_bytes=data.get("total_capacity_bytes"),
            free_bytes=data.get("free_bytes"),
            process_in_use_bytes=data.get("process_in_use_bytes"),
            allocated_by_pytorch_bytes=data.get("allocated_by_pytorch_bytes"),
            reserved_unallocated_bytes=data.get("reserved_unallocated_bytes"),
            reserved_total_bytes=data.get("reserved_total_bytes"),
            other_processes=tuple((int(p), int(b)) for p, b in data.get("other_processes", ())),
            message_format=str(data.get("message_format", "bare")),
            remedies=tuple(str(r) for r in data.get("remedies", ())),
        )


def parse_cuda_oom(text: str) -> CudaOomAlert | None:
    """The alert for a GPU OOM message (one line or wrapped over several), or None if there is none."""
    flat = " ".join(text.split())
    m = _CUDA_TRIGGER.search(flat)
    if m is None and not _OOM_EXC.search(flat):
        return None
    device = "XPU" if m is not None and m.group(0).upper().startswith("XPU") else "CUDA"
    gpu = re.search(r"\bGPU (\d+)\b", flat)
    tried = _find_size(r"Tried to allocate SIZE", flat)
    allocated = reserved_unalloc = reserved_total = process_in_use = None
    others: tuple[tuple[int, int], ...] = ()
    total = _find_size(r"has a total capac\w*ty of SIZE", flat)
    if total is not None:
        fmt = "new"
        free = _find_size(r"of which SIZE is free", flat)
        process_in_use = _find_size(r"this process has SIZE memory in use", flat)
        allocated = _find_size(r"SIZE is allocated by PyTorch", flat)
        reserved_unalloc = _find_size(r"SIZE is reserved by PyTorch but unallocated", flat)
        others = tuple(
            (int(p), _size(n, u))
            for p, n, u in re.findall(r"Process (\d+) has " + _SIZE + " memory in use", flat, re.IGNORECASE)
        )
        if allocated is not None and reserved_unalloc is not None:
            reserved_total = allocated + reserved_unalloc
    else:
        total = _find_size(r"SIZE total capacity", flat)
        free = _find_size(r"SIZE free\b", flat)
        allocated = _find_size(r"SIZE already allocated", flat)
        reserved_total = _find_size(r"SIZE reserved in total", flat) or _find_size(r"SIZE cached\)", flat)
        if reserved_total is not None and allocated is not None:
            reserved_unalloc = max(0, reserved_total - allocated)
        fmt = "old" if total is not None or allocated is not None else "bare"
    if fmt == "bare" and tried is not None:
        fmt = "new"  # "Tried to allocate X." with the rest cut off
    alert = CudaOomAlert(
        message=flat[:2000],
        device=device,
        gpu_index=int(gpu.group(1)) if gpu else None,
        tried_to_allocate_bytes=tried,
        total_capacity_bytes=total,
        free_bytes=free,
        process_in_use_bytes=process_in_use,
        allocated_by_pytorch_bytes=allocated,
        reserved_unallocated_bytes=reserved_unalloc,
        reserved_total_bytes=reserved_total,
        other_processes=others,
        message_format=fmt,
    )
    return _with_remedies(alert)


_EXPANDABLE = "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"


def _with_remedies(a: CudaOomAlert) -> CudaOomAlert:
    fs = lambda n: format_size(n, precision=2)  # noqa: E731
    out: list[str] = []
    if a.tried_to_allocate_bytes and a.total_capacity_bytes and a.tried_to_allocate_bytes > a.total_capacity_bytes:
        out.append(
            f"One allocation of {fs(a.tried_to_allocate_bytes)} is larger than the whole GPU ({fs(a.total_capacity_bytes)}): "
            "shrink the batch or the tensor of that size; no allocator setting can help."
        )
    if a.fragmentation:
        out.append(
            f"Fragmentation: PyTorch holds {fs(a.reserved_unallocated_bytes or 0)} reserved but unallocated"
            + (f", more than the {fs(a.tried_to_allocate_bytes)} it asked for" if a.tried_to_allocate_bytes else "")
            + f"; set {_EXPANDABLE} in the training's environment."
        )
    others = a.other_processes_bytes
    if others and a.total_capacity_bytes and others >= 0.1 * a.total_capacity_bytes:
        out.append(
            f"Other processes hold {fs(others)} of this GPU: stop them (nvidia-smi lists them) "
            "or choose a free GPU with CUDA_VISIBLE_DEVICES."
        )
    out += [
        "Use mixed precision (torch.autocast with bfloat16 or float16; Trainer bf16=True / fp16=True): "
        "activations take about half the memory.",
        "Turn on gradient checkpointing (torch.utils.checkpoint, or model.gradient_checkpointing_enable()): "
        "much less activation memory for roughly 20-30 % more time per step.",
        "Reduce the batch size, and keep the effective batch with gradient accumulation.",
        "Reduce the model or its inputs (fewer channels or layers, smaller images or sequences).",
    ]
    if not a.fragmentation:
        out.append(f"Set {_EXPANDABLE}: the allocator grows segments instead of failing on fragmented memory.")
    return replace(a, remedies=tuple(out))


_HOST_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("dataloader_worker_killed", re.compile(r"DataLoader worker \(pid (\d+)\) is killed by signal: Killed")),
    ("shm_exhausted", re.compile(r"insufficient shared memory|bus error encountered in worker|No space left on device.*?/dev/shm", re.IGNORECASE)),
    ("cpu_alloc", re.compile(r"DefaultCPUAllocator: (?:can't|not enough memory).*?(?:allocate|tried to allocate) (\d+) bytes", re.IGNORECASE)),
    ("cpu_alloc", re.compile(r"Unable to allocate " + _SIZE + r" for an array")),
    ("oom_killer", re.compile(r"Out of memory: Kill(?:ed)? process (\d+)|oom-kill:.*?task_memcg|Memory cgroup out of memory", re.IGNORECASE)),
    ("memory_error", re.compile(r"^\s*(?:[\w.]+\.)?MemoryError(?::|\s*$)")),
    # The shell's own report of a SIGKILLed child: "Killed" alone, or "bash: line 1: 4242 Killed  python train.py".
    ("killed", re.compile(r"^\s*Killed\s*$|: line \d+:\s+\d+ Killed\s")),
)


@dataclass(frozen=True)
class HostOomAlert:
    """Host (CPU RAM or /dev/shm) memory ran out, as the output says."""

    cause: str  # dataloader_worker_killed, shm_exhausted, cpu_alloc, oom_killer, memory_error, killed
    message: str
    pid: int | None = None
    requested_bytes: int | None = None
    remedies: tuple[str, ...] = ()

    kind = "host_oom"

    def summary(self) -> str:
        text = {
            "dataloader_worker_killed": f"a DataLoader worker (pid {self.pid}) was killed: probably out of host memory",
            "shm_exhausted": "shared memory (/dev/shm) ran out for the DataLoader workers",
            "cpu_alloc": "host memory allocation failed"
            + (f" for {format_size(self.requested_bytes, precision=2)}" if self.requested_bytes else ""),
            "oom_killer": "the kernel OOM killer killed a process" + (f" (pid {self.pid})" if self.pid else ""),
            "memory_error": "Python raised MemoryError: out of host memory",
            "killed": "a process was killed (SIGKILL): probably out of host memory",
        }
        return text.get(self.cause, self.cause)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "cause": self.cause,
            "message": self.message,
            "pid": self.pid,
            "requested_bytes": self.requested_bytes,
            "summary": self.summary(),
            "remedies": list(self.remedies),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "HostOomAlert":
        return cls(
            cause=str(data.get("cause", "")),
            message=str(data.get("message", "")),
            pid=data.get("pid"),
            requested_bytes=data.get("requested_bytes"),
            remedies=tuple(str(r) for r in data.get("remedies", ())),
        )


_HOST_REMEDIES = (
    "Check the kernel log for the kill: dmesg -T | grep -i -E 'killed process|out of memory' (or journalctl -k).",
    "Check a container or cgroup memory limit: cat /sys/fs/cgroup/memory.max and memory.events (oom_kill).",
    "Use fewer DataLoader workers or a smaller prefetch_factor; each worker holds its own copy of what the dataset keeps in memory.",
    "Keep large datasets out of worker memory: read items from disk (the cachewatch cache) instead of holding lists of arrays.",
)
_SHM_REMEDIES = (
    "Give the container more shared memory (docker run --shm-size=8g, or mount a larger /dev/shm).",
    "Use fewer DataLoader workers or a smaller prefetch_factor.",
    "Or set torch.multiprocessing.set_sharing_strategy('file_system').",
)


def parse_host_oom(line: str) -> HostOomAlert | None:
    """The host-memory alert one output line stands for, or None."""
    for cause, pattern in _HOST_PATTERNS:
        m = pattern.search(line)
        if m is None:
            continue
        pid = requested = None
        if cause in ("dataloader_worker_killed", "oom_killer") and m.lastindex and m.group(1):
            pid = int(m.group(1))
        elif cause == "cpu_alloc" and m.lastindex == 1:
            requested = int(m.group(1))
        elif cause == "cpu_alloc" and m.lastindex == 2:
            requested = _size(m.group(1), m.group(2))
        remedies = _SHM_REMEDIES if cause == "shm_exhausted" else _HOST_REMEDIES
        return HostOomAlert(cause=cause, message=line.strip()[:2000], pid=pid, requested_bytes=requested, remedies=remedies)
    return None


class OomDetector:
    """Line by line, recognises OOM messages; a CUDA message may run over several lines.

    ``feed_line`` returns the alerts completed by that line; ``flush`` those still open
    at the end of the output. A repeat of the same CUDA figures within a few lines (the
    message printed again by a logger, or once per rank) is reported once.
    """

    MAX_MESSAGE_LINES = 12
    REPEAT_WINDOW_LINES = 200

    def __init__(self) -> None:
        self._pending: list[str] | None = None
        self._line_no = 0
        self._last_key: tuple | None = None
        self._last_line_no = -(10**9)

    def feed_line(self, line: str) -> list[CudaOomAlert | HostOomAlert]:
        self._line_no += 1
        out: list[CudaOomAlert | HostOomAlert] = []
        if self._pending is not None:
            if _CONTINUATION.search(line) and not _CUDA_TRIGGER.search(line):
                self._pending.append(line)
                if _TERMINAL.search(line) or len(self._pending) >= self.MAX_MESSAGE_LINES:
                    out += self._finish()
                return out
            out += self._finish()
        if _CUDA_TRIGGER.search(line) or _OOM_EXC.search(line):
            self._pending = [line]
            if _TERMINAL.search(line):
                out += self._finish()
            return out
        host = parse_host_oom(line)
        if host is not None:
            out.append(host)
        return out

    def flush(self) -> list[CudaOomAlert | HostOomAlert]:
        return self._finish()

    def _finish(self) -> list[CudaOomAlert | HostOomAlert]:
        lines, self._pending = self._pending, None
        if not lines:
            return []
        alert = parse_cuda_oom(" ".join(lines))
        if alert is None:
            return []
        key = (alert.gpu_index, alert.tried_to_allocate_bytes, alert.free_bytes, alert.allocated_by_pytorch_bytes)
        repeat = key == self._last_key and self._line_no - self._last_line_no <= self.REPEAT_WINDOW_LINES
        self._last_key, self._last_line_no = key, self._line_no
        return [] if repeat else [alert]


@dataclass(frozen=True)
class ExitDiagnosis:
    """How the training ended, in plain words, with what to check."""

    category: str  # success, error, cuda_oom, host_oom_kill, signal, stopped
    summary: str
    exit_code: int | None = None
    signal: int | None = None
    signal_name: str | None = None
    probable_host_oom: bool = False
    hints: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "summary": self.summary,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "signal_name": self.signal_name,
            "probable_host_oom": self.probable_host_oom,
            "hints": list(self.hints),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ExitDiagnosis":
        return cls(
            category=str(data["category"]),
            summary=str(data["summary"]),
            exit_code=data.get("exit_code"),
            signal=data.get("signal"),
            signal_name=data.get("signal_name"),
            probable_host_oom=bool(data.get("probable_host_oom", False)),
            hints=tuple(str(h) for h in data.get("hints", ())),
        )


def _signal_name(num: int) -> str:
    try:
        return _signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


_SIGNAL_WORDS = {
    "SIGTERM": ("was terminated (SIGTERM)", "Something asked it to stop: cachewatch stop, a scheduler time limit (Slurm), docker stop, or a shutdown."),
    "SIGINT": ("was interrupted (SIGINT, Ctrl-C)", ""),
    "SIGHUP": ("lost its terminal (SIGHUP)", "Run it under cachewatch (or tmux/nohup) so closing the terminal does not end it."),
    "SIGSEGV": ("crashed with a segmentation fault (SIGSEGV)", "A native library crashed (CUDA driver, a C extension); run again with PYTHONFAULTHANDLER=1 for a Python stack."),
    "SIGBUS": ("crashed with a bus error (SIGBUS)", "Often /dev/shm is too small for DataLoader workers: docker --shm-size=8g, or fewer workers."),
    "SIGABRT": ("aborted (SIGABRT)", "A native assertion failed or a C++ exception escaped; the lines above the exit usually say which."),
    "SIGFPE": ("crashed with a floating point exception (SIGFPE)", ""),
    "SIGILL": ("crashed on an illegal instruction (SIGILL)", "A binary built for another CPU (wheels compiled with AVX-512 on an older CPU, for example)."),
    "SIGPIPE": ("ended on a broken pipe (SIGPIPE)", "Its output went to a pipe that closed."),
}
_OOM_KILL_HINTS = (
    "SIGKILL is what the kernel OOM killer and cgroup memory limits send: check dmesg -T | grep -i -E 'killed process|out of memory' (or journalctl -k).",
    "Check the container or cgroup limit: cat /sys/fs/cgroup/memory.max and the oom_kill count in memory.events.",
    "Lower host memory use: fewer DataLoader workers, a smaller prefetch_factor, datasets read from disk rather than held in RAM.",
)


def classify_exit(
    returncode: int | None = None,
    *,
    exit_code: int | None = None,
    signal: int | None = None,
    cuda_oom: CudaOomAlert | None = None,
    stopped_by_user: bool = False,
    oom_kills_seen: int | None = None,
) -> ExitDiagnosis:
    """Describe an exit. Give ``returncode`` as :mod:`subprocess` reports it (negative: killed by
    that signal), or ``exit_code``/``signal`` separately. A shell reports a signal as 128+N, so
    137 is SIGKILL. ``stopped_by_user`` marks a kill cachewatch itself sent (graceful stop), which
    is then no OOM; ``oom_kills_seen`` is the rise in the cgroup's oom_kill count, if known.
    """
    sig = signal
    code = exit_code
    if returncode is not None:
        if returncode < 0:
            sig = -returncode
        else:
            code = returncode
    if sig is None and code is not None and 128 < code <= 128 + 64:
        sig = code - 128  # the shell's way of saying "killed by signal N"
    if sig is not None:
        name = _signal_name(sig)
        if stopped_by_user:
            return ExitDiagnosis("stopped", f"stopped by cachewatch ({name})", code, sig, name)
        if sig == _signal.SIGKILL:
            confirmed = bool(oom_kills_seen)
            summary = (
                "killed by SIGKILL (signal 9): "
                + ("the cgroup's OOM killer killed it (host out of memory)" if confirmed else "probably killed for lack of host memory (OOM killer or a cgroup limit)")
            )
            return ExitDiagnosis("host_oom_kill", summary, code, sig, name, True, _OOM_KILL_HINTS)
        words, hint = _SIGNAL_WORDS.get(name, (f"was killed by {name} (signal {sig})", ""))
        return ExitDiagnosis("signal", f"the training {words}", code, sig, name, False, (hint,) if hint else ())
    if code is None:
        return ExitDiagnosis("error", "the training ended with an unknown status")
    if code == 0:
        return ExitDiagnosis("success", "the training finished (exit code 0)", 0)
    if cuda_oom is not None:
        return ExitDiagnosis("cuda_oom", f"the training failed with exit code {code}: {cuda_oom.summary()}", code, hints=cuda_oom.remedies)
    if code == 2:
        hint = "Exit code 2 is what Python and argparse use for bad command-line arguments; the first lines of the log say which."
    elif code == 127:
        hint = "Exit code 127: the command was not found (check the program name and PATH)."
    elif code == 126:
        hint = "Exit code 126: the command is not executable (chmod +x, or run it through its interpreter)."
    else:
        hint = "The traceback at the end of the log says why."
    return ExitDiagnosis("error", f"the training failed with exit code {code}", code, hints=(hint,))


def cgroup_oom_kills(pid: int | str = "self") -> int | None:
    """The ``oom_kill`` count of the cgroup (v2) that ``pid`` is in, or None where it cannot be read.

    Read before and after a run: a rise confirms that a SIGKILL was an OOM kill.
    """
    try:
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                events = Path("/sys/fs/cgroup") / line[3:].lstrip("/") / "memory.events"
                for ev in events.read_text().splitlines():
                    name, _, value = ev.partition(" ")
                    if name == "oom_kill":
                        return int(value)
    except (OSError, ValueError):
        return None
    return None
