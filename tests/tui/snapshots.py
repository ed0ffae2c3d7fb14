"""Fixed engine snapshots for the dashboard's snapshot tests, from the seeds' own figures.

Seed 000: a 100 GB image cache (target 90 GB) during epoch 4 of 15 at 3.23 h per epoch,
38.8 h left, 12 DataLoader workers, an RTX 3050 Ti at 31 % with 3.8 of 4 GB used.
Seed 001: CUDA out of memory, "Tried to allocate 20.00 MiB. GPU 0 has a total capacity of
3.68 GiB of which 11.75 MiB is free".

They are built as the engine's JSON and decoded with ``EngineSnapshot.from_json``, the
way a real snapshot reaches the dashboard, so the part types (GPU, process tree) are
the real ones whenever this build has them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from cachewatch.engine.daemon.snapshot import EngineSnapshot

T0 = 1766138400.0  # 2025-12-19 10:00:00 UTC: the morning of seed 000's fix
GB = 1000**3
MiB = 1024**2
GiB = 1024**3


def _training(state: str = "running", **extra: Any) -> dict[str, Any]:
    out = {
        "command": ["python", "train.py", "--epochs", "15", "--workers", "12"],
        "state": state,
        "cwd": "/home/skanndar/aplantida-ml",
        "log_path": "/home/skanndar/.local/state/cachewatch/aplantida/training.log",
        "pid": 48213 if state in ("running", "paused") else None,
        "attempt": 1,
        "restarts": 0,
        "failure_restarts": 0,
        "restart_policy": "never",
        "max_restarts": 3,
        "backoff_s": 5.0,
        "backoff_max_s": 300.0,
        "first_started": T0 - 3 * 3.23 * 3600 - 1800,
        "started": T0 - 3 * 3.23 * 3600 - 1800,
        "ended": None,
        "paused_s": 0.0,
        "paused_since": None,
        "exit_code": None,
        "signal": None,
        "exit_reason": "",
        "next_restart_at": None,
        "launch_error": None,
        "history": [],
    }
    out.update(extra)
    return out


def _progress() -> dict[str, Any]:
    return {
        "epoch": 4, "total_epochs": 15, "step": 1520, "total_steps": 5625, "loss": 0.4127,
        "metrics": {}, "last_checkpoint": "checkpoints/epoch3.pt", "last_checkpoint_time": T0 - 1800,
        "source": "report", "updated_time": T0 - 1,
        "eta": {"remaining_s": 38.8 * 3600, "finish_time": T0 + 38.8 * 3600, "epoch_remaining_s": 2.35 * 3600,
                "step_s": 2.067, "avg_epoch_s": 3.23 * 3600, "epoch_estimate_s": 3.23 * 3600, "epochs_done": 3,
                "epochs_left": 12, "fraction_done": 0.2187, "method": "steps", "computed_time": T0 - 1},
    }


def _processes(workers: int = 12) -> dict[str, Any]:
    procs = [{"pid": 48213, "ppid": 48200, "name": "python", "role": "root", "status": "running",
              "cpu_percent": 97.0, "rss_bytes": int(3.1 * GB), "create_time": T0 - 40000}]
    for i in range(workers):
        procs.append({"pid": 48230 + i, "ppid": 48213, "name": "pt_data_worker", "role": "worker", "status": "sleeping",
                      "cpu_percent": 18.0 + i, "rss_bytes": int((0.9 + 0.01 * i) * GB), "create_time": T0 - 39990})
    return {"time": T0, "root_pid": 48213, "root_alive": True, "processes": procs, "worker_detection": "thread_name",
            "vanished_pids": [], "reason": None}


def _gpu(with_gpu: bool) -> dict[str, Any]:
    if not with_gpu:
        return {"time": T0, "state": "no_gpu", "reason": "NVML found no NVIDIA GPU on this machine", "gpus": [],
                "training_pids": []}
    return {"time": T0, "state": "ok", "reason": None, "training_pids": [48213],
            "gpus": [{"index": 0, "name": "NVIDIA GeForce RTX 3050 Ti Laptop GPU", "utilization_percent": 31,
                      "memory_used_bytes": int(3.8 * GB), "memory_total_bytes": 4 * GB, "temperature_c": 67,
                      "power_w": 41.5, "power_limit_w": 60.0,
                      "processes": [{"pid": 48213, "used_gpu_memory_bytes": int(3.6 * GB), "in_training": True}],
                      "lost": False, "missing": [], "memory_used_fraction": 0.95,
                      "training_memory_bytes": int(3.6 * GB)}],
            "training_gpu_memory_bytes": int(3.6 * GB)}


def _host() -> dict[str, Any]:
    return {"time": T0, "cpu_count": 16, "cpu_percent": 58.0,
            "memory": {"total_bytes": 32 * GB, "used_bytes": 21 * GB, "available_bytes": 9 * GB, "percent": 71.9},
            "swap": {"total_bytes": 2 * GB, "used_bytes": 0, "free_bytes": 2 * GB, "percent": 0.0},
            "disk": {"path": "/media/skanndar/2TB1/aplantida-ml/image_cache", "measured_path": "/media/skanndar/2TB1",
                     "total_bytes": 2000 * GB, "used_bytes": 1750 * GB, "free_bytes": 250 * GB},
            "disk_reason": None, "alerts": []}


def _cache(used: int = int(96.4 * GB)) -> dict[str, Any]:
    return {"root": "/media/skanndar/2TB1/aplantida-ml/image_cache",
            "stats": {"root": "/media/skanndar/2TB1/aplantida-ml/image_cache", "size_bytes": used - 24 * MiB,
                      "data_bytes": used - 300 * MiB, "entries": 131_402, "max_bytes": 100 * GB, "target_bytes": 90 * GB,
                      "reserved_bytes": 24 * MiB, "writers": 12, "replaced_pinned_bytes": 0, "hits": 1_204_331,
                      "misses": 402_118, "evicted_files": 21_950, "evicted_bytes": int(64.2 * GB), "expired_files": 0,
                      "ttl_s": None, "block_bytes": 4096},
            "disk_free_bytes": 250 * GB, "disk_total_bytes": 2000 * GB, "error": None}


def _evictions(n: int = 9) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        out.append({"time": T0 - 60 - i * 1370, "cache": "/media/skanndar/2TB1/aplantida-ml/image_cache",
                    "reason": "before-write" if i % 4 else "manual", "files": 1500 + 37 * i, "bytes": int((10.0 + 0.11 * i) * GB),
                    "size_before": 100 * GB - 3 * MiB * i, "size_after": int(89.99 * GB), "dry_run": False})
    return out


def _engine() -> dict[str, Any]:
    return {"name": "aplantida", "pid": 48190, "version": "0.1.0", "protocol": "1.0", "started": T0 - 3 * 3.23 * 3600 - 1805,
            "hostname": "skanndar-laptop", "config_path": "/home/skanndar/aplantida-ml/cachewatch.toml",
            "state_dir": "/home/skanndar/.local/state/cachewatch/aplantida", "socket_path": "/run/user/1000/cachewatch/aplantida.sock",
            "log_path": "/home/skanndar/.local/state/cachewatch/aplantida/training.log", "log_start_offset": 0,
            "events_path": "/home/skanndar/.local/state/cachewatch/aplantida/events.jsonl", "interval_s": 1.0,
            "metrics_url": None, "readonly": False}


OOM_ALERT = {
    "id": "cuda_oom-1", "kind": "cuda_oom", "severity": "critical", "title": "CUDA out of memory",
    "text": "tried to allocate 20.00 MiB on GPU 0 (3.68 GiB total, 11.75 MiB free)",
    "remedies": ["mixed precision (torch.autocast / AMP): about half the activation memory",
                 "gradient checkpointing: 30-40 % less memory for about 30 % more time",
                 "a smaller batch size or model (hidden_channels 128 -> 64)",
                 "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True against fragmentation"],
    "time": T0 - 30, "last_time": T0 - 30, "count": 1, "dismissed": False, "active": True,
    "figures": {"tried_bytes": 20 * MiB, "total_bytes": int(3.68 * GiB), "free_bytes": int(11.75 * MiB), "gpu": 0},
}


def snapshot(*, gpu: bool = True, alerts: tuple[dict[str, Any], ...] = (), training_state: str = "running",
             jobs: tuple[dict[str, Any], ...] = (), seq: int = 7, **training_extra: Any) -> EngineSnapshot:
    data = {
        "seq": seq, "time": T0, "engine": _engine(),
        "training": _training(training_state, **training_extra),
        "progress": _progress(), "workers": _processes(), "gpu": _gpu(gpu), "host": _host(),
        "caches": [_cache()], "watched": [], "evictions": _evictions(), "alerts": list(alerts), "jobs": list(jobs),
        "log_size_bytes": 4096,
    }
    return EngineSnapshot.from_json(data)


def verify_job(ok: bool) -> dict[str, Any]:
    summary_ok = ("cache     /media/skanndar/2TB1/aplantida-ml/image_cache\n"
                  "entries   131402 (131402 hashed, 96.4 GB read, 1.9 GB/s, 4 threads, 50s)\nresult    clean")
    summary_bad = ("cache     /media/skanndar/2TB1/aplantida-ml/image_cache\n"
                   "entries   131402 (131402 hashed, 96.4 GB read, 1.9 GB/s, 4 threads, 50s)\n"
                   "problems  3: 1 missing file, 2 checksum mismatch\n"
                   "  checksum_mismatch  img/0a/4f1c.jpg  (xxh3 9c1e… != 77aa…)\n"
                   "  checksum_mismatch  img/3b/99d2.jpg  (xxh3 01f4… != c3d0…)\n"
                   "  missing_file       img/c1/0e7a.jpg  (no file for a live entry)\n"
                   "result    3 problems remain; run `cachewatch verify --repair` to drop corrupt entries and re-index sound files")
    return {"id": "verify-1", "kind": "verify", "state": "done", "started": T0 - 50, "ended": T0 - 1,
            "done": 131402, "total": 131402, "unit": "entries", "message": "",
            "result": {"ok": ok, "summary": summary_ok if ok else summary_bad,
                       "remaining": {} if ok else {"missing_file": 1, "checksum_mismatch": 2}},
            "error": None}


def running_job() -> dict[str, Any]:
    return {"id": "verify-1", "kind": "verify", "state": "running", "started": T0 - 20, "ended": None,
            "done": 52_000, "total": 131_402, "unit": "entries", "message": "hashing", "result": {}, "error": None}


def with_log(snap: EngineSnapshot) -> EngineSnapshot:
    return replace(snap)
