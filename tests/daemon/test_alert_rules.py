"""The alert rules are pure functions from what a part saw to findings, remedies included."""

from __future__ import annotations

from pathlib import Path

from cachewatch.engine.daemon import alerts
from cachewatch.engine.monitor.host import HostSampler
from cachewatch.engine.training.oom import classify_exit, parse_cuda_oom

CUDA_OOM = ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity "
            "of 79.10 GiB of which 1.50 GiB is free. Of the allocated memory 75.00 GiB is allocated by PyTorch")


def test_host_thresholds_raise_memory_and_disk_with_their_remedies_and_clear_below(tmp_path: Path) -> None:
    crossed = alerts.host_findings(HostSampler(tmp_path, memory_alert=0.001, disk_alert=0.001).sample())
    assert set(crossed) == {"memory", "disk"}
    mem, disk = crossed["memory"], crossed["disk"]
    assert mem is not None and disk is not None
    assert mem.title == "System memory is almost full" and "fewer DataLoader workers (num_workers)" in mem.remedies
    assert disk.remedies == ("lower [cache] max_size", "free space on that disk")
    assert mem.figures["threshold"] == 0.001 and 0 < mem.figures["used_fraction"] <= 1
    quiet = alerts.host_findings(HostSampler(tmp_path, memory_alert=1.0, disk_alert=1.0).sample())
    assert quiet == {"memory": None, "disk": None}  # the engine clears both keys


def test_an_oom_in_the_output_is_keyed_by_attempt_and_keeps_its_own_remedies() -> None:
    oom = parse_cuda_oom(CUDA_OOM)
    assert oom is not None
    f = alerts.oom_finding(oom, attempt=3)
    assert (f.kind, f.severity, f.title, f.key) == ("cuda_oom", "critical", "CUDA out of memory", "cuda_oom:attempt-3")
    assert f.remedies == oom.remedies and f.remedies
    assert "remedies" not in f.figures and "kind" not in f.figures


def test_exit_rule() -> None:
    failed = {"exit_code": 1, "signal": None, "attempt": 2, "reason": "failed", "duration_s": 4.0}
    plain = alerts.exit_finding(failed, None, "; restart 1/3 in 5s")
    assert plain is not None and plain.key == "training_exit:attempt-2"
    assert plain.text == "attempt 2 failed; restart 1/3 in 5s; the log tail says why"
    killed = alerts.exit_finding({**failed, "exit_code": None, "signal": "SIGKILL"}, classify_exit(signal=9))
    assert killed is not None and killed.kind == "host_oom_kill" and killed.severity == "critical" and killed.remedies
    assert alerts.exit_finding({**failed, "requested": True}, None) is None  # the user stopped it
    assert alerts.exit_finding({**failed, "exit_code": 0}, None) is None
    oom = parse_cuda_oom(CUDA_OOM)
    assert alerts.exit_finding(failed, classify_exit(exit_code=1, cuda_oom=oom)) is None  # the output's alert says it
