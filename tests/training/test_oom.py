"""CUDA and host OOM recognition, remedies, and exit classification, with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cachewatch.engine.training import (
    CudaOomAlert,
    ExitDiagnosis,
    HostOomAlert,
    OomDetector,
    ProgressFeed,
    classify_exit,
    parse_cuda_oom,
    parse_host_oom,
)

MiB, GiB, KiB = 1024**2, 1024**3, 1024

# Seed 001 as the user pasted it: the message wrapped over three lines.
SEED_001 = """torch.OutOfMemoryError: CUDA out of memory. 
Tried to allocate 20.00 MiB. GPU 0 has a total capacity of 3.68 GiB 
of which 11.75 MiB is free.
"""

NEW_FORMAT = (
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of 3.68 GiB "
    "of which 11.75 MiB is free. Including non-PyTorch memory, this process has 3.66 GiB memory in use. Of the allocated "
    "memory 3.40 GiB is allocated by PyTorch, and 150.00 MiB is reserved by PyTorch but unallocated. If reserved but "
    "unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  "
    "See documentation for Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
)

# torch 2.1 spelled "capacty" and named other processes on the GPU.
TORCH21_OTHERS = (
    "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 5.96 GiB. GPU 1 has a total capacty of 23.69 GiB "
    "of which 5.25 GiB is free. Process 2006998 has 256.00 MiB memory in use. Process 2007001 has 4.00 GiB memory in use. "
    "Including non-PyTorch memory, this process has 14.17 GiB memory in use. Of the allocated memory 13.88 GiB is allocated "
    "by PyTorch, and 0 bytes is reserved by PyTorch but unallocated. If reserved but unallocated memory is large try setting "
    "max_split_size_mb to avoid fragmentation.  See documentation for Memory Management and PYTORCH_CUDA_ALLOC_CONF"
)

OLD_FORMAT = (
    "RuntimeError: CUDA out of memory. Tried to allocate 36.00 MiB (GPU 0; 7.93 GiB total capacity; 130.35 MiB already "
    "allocated; 47.06 MiB free; 188.00 MiB reserved in total by PyTorch) If reserved memory is >> allocated memory try "
    "setting max_split_size_mb to avoid fragmentation.  See documentation for Memory Management and PYTORCH_CUDA_ALLOC_CONF"
)

FRAGMENTED = (
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 512.00 MiB. GPU 0 has a total capacity of 23.65 GiB of "
    "which 301.56 MiB is free. Including non-PyTorch memory, this process has 23.34 GiB memory in use. Of the allocated "
    "memory 17.10 GiB is allocated by PyTorch, and 5.90 GiB is reserved by PyTorch but unallocated. If reserved but "
    "unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  "
    "See documentation for Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
)


def test_seed_001_message_wrapped_over_lines() -> None:
    det = OomDetector()
    alerts = [a for line in SEED_001.splitlines() for a in det.feed_line(line)] + det.flush()
    assert len(alerts) == 1
    a = alerts[0]
    assert isinstance(a, CudaOomAlert)
    assert a.gpu_index == 0
    assert a.tried_to_allocate_bytes == 20 * MiB
    assert a.total_capacity_bytes == round(3.68 * GiB)
    assert a.free_bytes == round(11.75 * MiB)
    assert a.summary() == "CUDA out of memory on GPU 0, tried to allocate 20.00 MiB, 11.75 MiB free of 3.68 GiB"


def test_new_format_all_figures() -> None:
    a = parse_cuda_oom(NEW_FORMAT)
    assert a is not None and a.message_format == "new"
    assert (a.tried_to_allocate_bytes, a.free_bytes) == (20 * MiB, round(11.75 * MiB))
    assert a.process_in_use_bytes == round(3.66 * GiB)
    assert a.allocated_by_pytorch_bytes == round(3.40 * GiB)
    assert a.reserved_unallocated_bytes == 150 * MiB
    assert a.reserved_total_bytes == round(3.40 * GiB) + 150 * MiB



def test_fragmentation_when_the_cache_holds_more_than_was_asked() -> None:
    # 150 MiB reserved but unallocated against 20 MiB asked: torch frees its cache and retries
    # before raising, so what is left is in pieces it cannot hand out: fragmentation.
    assert parse_cuda_oom(NEW_FORMAT).fragmentation  # type: ignore[union-attr]
    small = NEW_FORMAT.replace("150.00 MiB is reserved", "2.00 MiB is reserved")
    assert not parse_cuda_oom(small).fragmentation  # type: ignore[union-attr]


def test_fragmented_gpu_puts_expandable_segments_first() -> None:
    a = parse_cuda_oom(FRAGMENTED)
    assert a is not None and a.fragmentation
    assert a.remedies[0].startswith("Fragmentation: PyTorch holds 5.90 GiB reserved but unallocated")
    assert "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True" in a.remedies[0]
    assert sum("expandable_segments" in r for r in a.remedies) == 1


def test_remedies_always_name_the_concrete_fixes() -> None:
    a = parse_cuda_oom(OLD_FORMAT)
    assert a is not None
    text = "\n".join(a.remedies)
    for fix in ("mixed precision", "gradient checkpointing", "batch size", "Reduce the model", "expandable_segments:True"):
        assert fix.lower() in text.lower(), fix


def test_old_format_figures() -> None:
    a = parse_cuda_oom(OLD_FORMAT)
    assert a is not None and a.message_format == "old"
    assert a.tried_to_allocate_bytes == 36 * MiB and a.gpu_index == 0
    assert a.total_capacity_bytes == round(7.93 * GiB)
    assert a.allocated_by_pytorch_bytes == round(130.35 * MiB)
    assert a.free_bytes == round(47.06 * MiB)
    assert a.reserved_total_bytes == 188 * MiB
    assert a.reserved_unallocated_bytes == 188 * MiB - round(130.35 * MiB)


def test_oldest_format_with_cached_and_zero_bytes_free() -> None:
    a = parse_cuda_oom(
        "RuntimeError: CUDA out of memory. Tried to allocate 512.00 KiB (GPU 2; 11.17 GiB total capacity; "
        "10.25 GiB already allocated; 0 bytes free; 10.62 GiB cached)"
    )
    assert a is not None
    assert (a.gpu_index, a.tried_to_allocate_bytes, a.free_bytes) == (2, 512 * KiB, 0)
    assert a.reserved_total_bytes == round(10.62 * GiB)


def test_other_processes_on_the_gpu() -> None:
    a = parse_cuda_oom(TORCH21_OTHERS)
    assert a is not None and a.gpu_index == 1
    assert a.total_capacity_bytes == round(23.69 * GiB)
    assert a.other_processes == ((2006998, 256 * MiB), (2007001, 4 * GiB))
    assert a.reserved_unallocated_bytes == 0 and not a.fragmentation
    assert any(r.startswith("Other processes hold 4.25 GiB") for r in a.remedies)


def test_request_larger_than_the_gpu() -> None:
    a = parse_cuda_oom(
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 130206.04 GiB. GPU 0 has a total capacity of "
        "23.56 GiB of which 16.57 GiB is free."
    )
    assert a is not None and "larger than the whole GPU" in a.remedies[0]


def test_bare_oom_without_figures() -> None:
    a = parse_cuda_oom("RuntimeError: CUDA error: out of memory")
    assert a is not None and a.message_format == "bare" and a.tried_to_allocate_bytes is None
    assert len(a.remedies) >= 4


def test_alert_json_round_trip() -> None:
    a = parse_cuda_oom(TORCH21_OTHERS)
    assert a is not None
    assert CudaOomAlert.from_json(a.to_json()) == a
    h = parse_host_oom("RuntimeError: DataLoader worker (pid 4242) is killed by signal: Killed.")
    assert h is not None and HostOomAlert.from_json(h.to_json()) == h


def test_detector_reports_a_repeat_once_and_ignores_source_lines() -> None:
    det = OomDetector()
    lines = [
        "Traceback (most recent call last):",
        '    if "CUDA out of memory" in str(err):',  # a source line quoting the message
        NEW_FORMAT,
        "ERROR:train:" + NEW_FORMAT.split(": ", 1)[1],  # the same error logged again
        "Epoch 2/15",
    ]
    alerts = [a for line in lines for a in det.feed_line(line)] + det.flush()
    assert len(alerts) == 1


@pytest.mark.parametrize(
    "line, cause, pid, requested",
    [
        ("RuntimeError: DataLoader worker (pid 4242) is killed by signal: Killed.", "dataloader_worker_killed", 4242, None),
        ("ERROR: Unexpected bus error encountered in worker. This might be caused by insufficient shared memory (shm).", "shm_exhausted", None, None),
        ("RuntimeError: [enforce fail at alloc_cpu.cpp:114] data. DefaultCPUAllocator: not enough memory: you tried to allocate 1073741824 bytes.", "cpu_alloc", None, 1073741824),
        ("numpy.core._exceptions._ArrayMemoryError: Unable to allocate 3.20 GiB for an array with shape (1000, 1000, 859) and data type float32", "cpu_alloc", None, round(3.2 * GiB)),
        ("MemoryError", "memory_error", None, None),
        ("Killed", "killed", None, None),
        ("bash: line 1: 31337 Killed                  python train.py", "killed", None, None),
        ("[12345.678] Out of memory: Killed process 31337 (python) total-vm:123kB", "oom_killer", 31337, None),
    ],
)
def test_host_oom_lines(line: str, cause: str, pid: int | None, requested: int | None) -> None:
    h = parse_host_oom(line)
    assert h is not None and (h.cause, h.pid, h.requested_bytes) == (cause, pid, requested)
    assert h.remedies


@pytest.mark.parametrize("line", ["Killed 3 zombie processes", "No MemoryError here, all good", "killed the bug"])
def test_not_host_oom(line: str) -> None:
    assert parse_host_oom(line) is None


# ---------------------------------------------------------------- exits, for real


def test_sigkill_is_a_probable_host_oom_kill() -> None:
    proc = subprocess.run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    assert proc.returncode == -9
    d = classify_exit(proc.returncode)
    assert d.category == "host_oom_kill" and d.probable_host_oom and d.signal_name == "SIGKILL"
    assert any("dmesg" in h for h in d.hints) and any("memory.max" in h for h in d.hints)


def test_exit_code_137_through_a_shell_is_sigkill() -> None:
    proc = subprocess.run(["sh", "-c", f"{sys.executable} -c 'import os; os.kill(os.getpid(), 9)'"])
    assert proc.returncode == 137
    d = classify_exit(proc.returncode)
    assert d.signal == 9 and d.probable_host_oom


def test_sigkill_sent_by_cachewatch_itself_is_no_oom() -> None:
    d = classify_exit(-9, stopped_by_user=True)
    assert d.category == "stopped" and not d.probable_host_oom


@pytest.mark.parametrize("sig, words", [(signal.SIGTERM, "terminated"), (signal.SIGSEGV, "segmentation fault"), (signal.SIGBUS, "bus error")])
def test_other_signals_described_plainly(sig: int, words: str) -> None:
    proc = subprocess.run([sys.executable, "-c", f"import os; os.kill(os.getpid(), {int(sig)})"])
    d = classify_exit(proc.returncode)
    assert d.category == "signal" and not d.probable_host_oom and words in d.summary


def test_plain_exit_codes() -> None:
    assert classify_exit(0).category == "success"
    d = classify_exit(exit_code=1)
    assert d.category == "error" and "exit code 1" in d.summary
    assert "not found" in classify_exit(127).hints[0]
    assert ExitDiagnosis.from_json(d.to_json()) == d


OOM_SCRIPT = textwrap.dedent(
    '''
    import sys
    try:
        import torch
        OutOfMemoryError = torch.OutOfMemoryError
    except ImportError:  # the same traceback line without torch installed
        OutOfMemoryError = type("OutOfMemoryError", (RuntimeError,), {"__module__": "torch"})

    def forward(batch):
        raise OutOfMemoryError(sys.argv[1])

    for step in range(3):
        print(f"Epoch 1/15 step {step}", flush=True)
    forward(None)
    '''
)


def test_a_real_process_that_hits_cuda_oom(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(OOM_SCRIPT)
    message = NEW_FORMAT.split(": ", 1)[1]
    proc = subprocess.Popen(
        [sys.executable, str(script), message], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    feed = ProgressFeed()
    alerts = []
    assert proc.stdout is not None
    while chunk := os.read(proc.stdout.fileno(), 97):  # small reads: the message arrives in pieces
        alerts += feed.feed_output(chunk)
    rc = proc.wait()
    alerts += feed.finish()
    assert rc == 1
    assert len(alerts) == 1
    a = alerts[0]
    assert isinstance(a, CudaOomAlert) and "torch.OutOfMemoryError: CUDA out of memory." in a.message
    assert (a.gpu_index, a.tried_to_allocate_bytes, a.total_capacity_bytes, a.free_bytes) == (0, 20 * MiB, round(3.68 * GiB), round(11.75 * MiB))
    assert (a.allocated_by_pytorch_bytes, a.reserved_unallocated_bytes) == (round(3.40 * GiB), 150 * MiB)
    d = classify_exit(rc, cuda_oom=feed.last_cuda_oom)
    assert d.category == "cuda_oom" and "tried to allocate 20.00 MiB" in d.summary
    assert any("mixed precision" in h for h in d.hints)
