"""split: every format round-trips exactly; bad input gets its error and stays as it was;
originals are deleted only after validation and confirmation; cancel and disk-full leave nothing behind."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from cachewatch.engine.jobs import (
    SplitError,
    SplitInputError,
    SplitJob,
    SplitOptions,
    SplitValidationError,
    recommend,
    split_files,
)
from cachewatch.engine.daemon.jobrunner import JobRunner
from cachewatch.engine.daemon.snapshot import JobView
from cachewatch.engine.jobs.equality import deep_equal
from cachewatch.engine.jobs.split_pickle import PickleSplitter

from tests.support.helpers import run_cli


def traces(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a = rng.standard_normal((5, 4)).astype(np.float32)
        a[0, 0] = np.nan
        out.append({
            "id": i,
            "hidden": a,
            "view": np.arange(40, dtype=np.int64)[::3],  # non-contiguous: pickles differently after a reload
            "tags": {"q", f"t{i}", "-0.0"},
            "score": -0.0 if i % 2 else float("nan"),
            "text": "trace " * (i % 3),
        })
    return out


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def outputs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir()) if d.exists() else []


# ------------------------------------------------------------------------------- round trips
def _pickle_gz(p: Path, data: Any) -> None:
    with gzip.open(p, "wb") as f:
        pickle.dump(data, f)


def _pickle(p: Path, data: Any) -> None:
    with open(p, "wb") as f:
        pickle.dump(data, f)


def _load_pickle(p: Path) -> Any:
    opener = gzip.open if p.name.endswith(".gz") else open
    with opener(p, "rb") as f:
        return pickle.load(f)


def _concat_np(parts: list[Any]) -> Any:
    return np.concatenate(parts)


CASES: dict[str, tuple[str, Callable[[Path], Any], str, Callable[[Path], Any], Callable[[list[Any]], Any]]] = {
    # name: (input file name, writer returning the original, output suffix, output loader, joiner)
    "pkl.gz list": ("batch_0000.pkl.gz", lambda p: (_pickle_gz(p, d := traces(30)), d)[1], ".pkl.gz", _load_pickle, lambda xs: sum(xs, [])),
    "pkl tuple": ("t.pkl", lambda p: (_pickle(p, d := tuple(traces(30, 1))), d)[1], ".pkl.gz", _load_pickle, lambda xs: sum(xs, ())),
    "npy C": ("a.npy", lambda p: (np.save(p, d := np.random.default_rng(2).standard_normal((30, 3, 2))), d)[1], ".npy", np.load, _concat_np),
    "npy Fortran": ("f.npy", lambda p: (np.save(p, d := np.asfortranarray(np.arange(30 * 7).reshape(30, 7))), d)[1], ".npy", np.load, _concat_np),
    "npy structured": ("s.npy", lambda p: (np.save(p, d := np.array([(i, i * 0.5) for i in range(30)], dtype=[("k", "i4"), ("v", "f8")])), d)[1], ".npy", np.load, _concat_np),
    "npz deflated": ("z.npz", lambda p: (np.savez_compressed(p, x=(x := np.random.default_rng(3).random((30, 4))), y=(y := np.arange(30))), {"x": x, "y": y})[1], ".npz", lambda q: dict(np.load(q)), lambda xs: {k: np.concatenate([x[k] for x in xs]) for k in xs[0]}),
    "npz stored, Fortran member": ("w.npz", lambda p: (np.savez(p, x=(x := np.asfortranarray(np.random.default_rng(4).random((30, 4)))), labels=(y := np.arange(30.0))), {"x": x, "labels": y})[1], ".npz", lambda q: dict(np.load(q)), lambda xs: {k: np.concatenate([x[k] for x in xs]) for k in xs[0]}),
    "pt tensor": ("w.pt", lambda p: (torch.save(d := torch.randn(30, 5), p), d)[1], ".pt", lambda q: torch.load(q, weights_only=True), lambda xs: torch.cat(xs)),
    "pt bfloat16 view": ("v.pt", lambda p: (torch.save(d := torch.randn(60, 3).to(torch.bfloat16)[::2], p), d)[1], ".pt", lambda q: torch.load(q, weights_only=True), lambda xs: torch.cat(xs)),
    "pt list": ("l.pt", lambda p: (torch.save(d := [{"x": torch.full((2,), float(i)), "i": i} for i in range(30)], p), d)[1], ".pt", lambda q: torch.load(q, weights_only=True), lambda xs: sum(xs, [])),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_format_round_trips_exactly(case: str, tmp_path: Path) -> None:
    fname, write, suffix, load, join = CASES[case]
    src = tmp_path / fname
    original = write(src)
    before = sha(src)
    out = tmp_path / "out"
    report = split_files(SplitOptions(str(src), str(out), traces_per_batch=7, workers=2, pattern="*"))
    assert report.ok
    stem = fname.split(".")[0]
    files = outputs(out)
    assert [p.name for p in files] == [f"{stem}_sub{k:04d}{suffix}" for k in range(5)]  # 30 items, 7 per batch
    parts = [load(p) for p in files]
    lengths = [len(p["x"] if isinstance(p, dict) else p) for p in parts]
    assert lengths == [7, 7, 7, 7, 2]
    assert deep_equal(join(parts), original)
    assert sha(src) == before  # input untouched
    assert report.results[0].items == 30 and report.results[0].validated


def test_no_compress_writes_plain_pickles(tmp_path: Path) -> None:
    _pickle_gz(tmp_path / "b.pkl.gz", traces(5))
    split_files(SplitOptions(str(tmp_path / "b.pkl.gz"), str(tmp_path / "o"), traces_per_batch=2, compress=False))
    names = [p.name for p in outputs(tmp_path / "o")]
    assert names == ["b_sub0000.pkl", "b_sub0001.pkl", "b_sub0002.pkl"]
    assert (tmp_path / "o" / "b_sub0000.pkl").read_bytes()[:1] == b"\x80"  # a pickle, not gzip


def test_outputs_are_the_same_bytes_whatever_the_worker_count(tmp_path: Path) -> None:
    _pickle_gz(tmp_path / "b.pkl.gz", traces(40))
    for w in (1, 3):
        split_files(SplitOptions(str(tmp_path / "b.pkl.gz"), str(tmp_path / f"o{w}"), traces_per_batch=6, workers=w))
    one, three = outputs(tmp_path / "o1"), outputs(tmp_path / "o3")
    assert [p.name for p in one] == [p.name for p in three] and len(one) == 7
    assert [sha(p) for p in one] == [sha(p) for p in three]


def test_a_directory_is_split_file_by_file_with_the_pattern(tmp_path: Path) -> None:
    d = tmp_path / "traces"
    d.mkdir()
    for i in range(3):
        _pickle_gz(d / f"batch_{i:04d}.pkl.gz", traces(10, i))
    (d / "notes.txt").write_text("not a batch")
    out = run_cli("split", "--input", str(d), "--output", str(tmp_path / "split"), "-n", "4", "-q")
    assert out.returncode == 0, out.stderr
    names = [p.name for p in outputs(tmp_path / "split")]
    assert names == [f"batch_{i:04d}_sub{k:04d}.pkl.gz" for i in range(3) for k in range(3)]
    assert len(list(d.iterdir())) == 4


# ------------------------------------------------------------------------- bad input, nothing lost
def _truncated_gzip(d: Path) -> Path:
    p = d / "cut.pkl.gz"
    _pickle_gz(p, traces(50))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


def _not_a_list(d: Path) -> Path:
    p = d / "dict.pkl"
    _pickle(p, {"a": 1})
    return p


def _empty(d: Path) -> Path:
    p = d / "empty.pkl.gz"
    p.write_bytes(b"")
    return p


def _no_matches(d: Path) -> Path:
    sub = d / "nothing_here"
    sub.mkdir()
    (sub / "readme.txt").write_text("x")
    return sub


def _truncated_npy(d: Path) -> Path:
    p = d / "cut.npy"
    np.save(p, np.zeros((1000, 10)))
    data = p.read_bytes()
    p.write_bytes(data[:5000])
    return p


def _object_npy(d: Path) -> Path:
    p = d / "obj.npy"
    np.save(p, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return p


def _ragged_npz(d: Path) -> Path:
    p = d / "ragged.npz"
    np.savez(p, x=np.zeros(5), y=np.zeros(6))
    return p


def _lying_npz(d: Path) -> Path:
    """A hostile .npz: its member's header claims 8 TB of rows that are not there."""
    import io
    import zipfile

    p = d / "lying.npz"
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x.npy", head.getvalue() + b"\0" * 800)
    return p


def _garbage_pt(d: Path) -> Path:
    p = d / "junk.pt"
    p.write_bytes(b"PK\x03\x04 this is not a torch file")
    return p


def _not_gzip(d: Path) -> Path:
    p = d / "plain.pkl.gz"
    p.write_bytes(b"hello, not compressed at all")
    return p


BAD: dict[str, tuple[Callable[[Path], Path], str]] = {
    "truncated gzip": (_truncated_gzip, "truncated: the gzip stream ends early"),
    "pickle not a list": (_not_a_list, "holds a dict, not a list"),
    "empty file": (_empty, "is empty (0 bytes)"),
    "directory with no matches": (_no_matches, "match --pattern"),
    "truncated npy": (_truncated_npy, "truncated or corrupt"),
    "object npy": (_object_npy, "holds Python objects"),
    "npz arrays of different lengths": (_ragged_npz, "different first-axis lengths"),
    "garbage .pt": (_garbage_pt, "not a valid torch file"),
    "npz declaring data it does not hold": (_lying_npz, "more than its"),
    "named .gz but not gzip": (_not_gzip, "is not gzip-compressed"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_a_clear_error_and_is_left_as_it_was(case: str, tmp_path: Path) -> None:
    make, expected = BAD[case]
    (tmp_path / "in").mkdir()
    bad = make(tmp_path / "in")
    before = {p: sha(p) for p in bad.rglob("*") if p.is_file()} if bad.is_dir() else {bad: sha(bad)}
    out = tmp_path / "out"
    r = run_cli("split", "-i", str(bad), "-o", str(out), "-n", "3", "--delete-original", "--yes")
    assert r.returncode == 2, r.stdout + r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("cachewatch: ") and expected in last, r.stderr
    assert "Traceback" not in r.stderr
    for p, digest in before.items():
        assert p.exists() and sha(p) == digest
    assert outputs(out) == []


def test_an_output_directory_inside_the_input_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "data"
    d.mkdir()
    _pickle_gz(d / "b.pkl.gz", traces(4))
    r = run_cli("split", "-i", str(d), "-o", str(d / "split"))
    assert r.returncode == 2 and "is inside --input" in r.stderr
    assert not (d / "split").exists()
    r = run_cli("split", "-i", str(d), "-o", str(d))
    assert r.returncode == 2 and "is inside --input" in r.stderr


def test_a_corrupt_file_in_a_directory_fails_alone_and_the_others_go_on(tmp_path: Path) -> None:
    d = tmp_path / "data"
    d.mkdir()
    _pickle_gz(d / "good.pkl.gz", traces(6))
    _truncated_gzip(d)
    cut_sha = sha(d / "cut.pkl.gz")
    r = run_cli("split", "-i", str(d), "-o", str(tmp_path / "o"), "-n", "3", "--delete-original", "--yes", "--json")
    assert r.returncode == 1
    report = json.loads(r.stdout)
    failed = [x for x in report["results"] if x["error"]]
    assert [Path(x["input"]).name for x in failed] == ["cut.pkl.gz"]
    assert not (d / "good.pkl.gz").exists()  # validated, confirmed: deleted
    assert sha(d / "cut.pkl.gz") == cut_sha
    assert [p.name for p in outputs(tmp_path / "o")] == ["good_sub0000.pkl.gz", "good_sub0001.pkl.gz"]


# ----------------------------------------------------------------- originals: only after validation
class Drifting:
    """Loads back different from what was saved: validation must catch it."""

    def __init__(self, v: int) -> None:
        self.v = v

    def __reduce__(self) -> Any:
        return (Drifting, (self.v + 1,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Drifting) and other.v == self.v


def test_delete_original_waits_for_validation_and_a_failed_validation_keeps_it(tmp_path: Path) -> None:
    src = tmp_path / "b.pkl"
    items: list[Any] = list(range(10))
    items[8] = Drifting(1)
    _pickle(src, items)
    before = sha(src)
    with pytest.raises(SplitValidationError, match=r"item 8 .* differs"):
        split_files(SplitOptions(str(src), str(tmp_path / "o"), traces_per_batch=3, delete_original=True, workers=2))
    assert src.exists() and sha(src) == before
    assert outputs(tmp_path / "o") == []  # no outputs, no .part files


def test_a_corrupted_write_is_caught_by_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "b.pkl.gz"
    _pickle_gz(src, traces(9))
    real_write = PickleSplitter.write

    def flip_a_byte(self, payload, part, **kw):  # a disk that returns other bytes than were written
        real_write(self, payload, part, **kw)
        if part.name.startswith("b_sub0001"):
            data = bytearray(part.read_bytes())
            data[len(data) // 2] ^= 0xFF
            part.write_bytes(bytes(data))

    monkeypatch.setattr(PickleSplitter, "write", flip_a_byte)
    with pytest.raises(SplitValidationError, match=r"b_sub0001\.pkl\.gz'"):  # fails to load back, or loads back different
        split_files(SplitOptions(str(src), str(tmp_path / "o"), traces_per_batch=3, delete_original=True))
    assert src.exists() and outputs(tmp_path / "o") == []


def test_delete_original_asks_first_and_no_means_nothing_happens(tmp_path: Path) -> None:
    src = tmp_path / "b.pkl.gz"
    _pickle_gz(src, traces(6))
    no = run_cli("split", "-i", str(src), "-o", str(tmp_path / "o"), "-n", "2", "--delete-original", input="n\n")
    assert no.returncode == 2 and "[y/N]" in no.stderr and "not confirmed" in no.stderr
    assert src.exists() and outputs(tmp_path / "o") == []
    yes = run_cli("split", "-i", str(src), "-o", str(tmp_path / "o"), "-n", "2", "--delete-original", input="y\n")
    assert yes.returncode == 0, yes.stderr
    assert not src.exists() and len(outputs(tmp_path / "o")) == 3
    assert sum((_load_pickle(p) for p in outputs(tmp_path / "o")), []) is not None


def test_no_validate_cannot_be_combined_with_delete_original(tmp_path: Path) -> None:
    src = tmp_path / "b.pkl.gz"
    _pickle_gz(src, traces(3))
    r = run_cli("split", "-i", str(src), "-o", str(tmp_path / "o"), "--no-validate", "--delete-original", "--yes")
    assert r.returncode == 2 and "needs validation" in r.stderr and src.exists()


def _split_with_a_tiny_disk(tmp_path: Path, src: Path) -> subprocess.CompletedProcess:
    """Real ENOSPC on a small tmpfs when we may mount one (root), else a real EFBIG from RLIMIT_FSIZE."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                                                   capture_output=True).returncode == 0
    try:
        def limit() -> None:
            if not mounted:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))

        return subprocess.run(
            [sys.executable, "-m", "cachewatch.tui.cli", "split", "-i", str(src), "-o", str(mnt / "o"), "-n", "40",
             "--no-compress", "--delete-original", "--yes"],
            capture_output=True, text=True, preexec_fn=limit, timeout=120,
        )
    finally:
        leftovers = sorted(p.name for p in (mnt / "o").iterdir()) if (mnt / "o").exists() else []
        if mounted:
            subprocess.run(["umount", str(mnt)], check=True)
        assert leftovers == []


def test_a_corrupted_gzip_trailer_is_caught_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "b.pkl.gz"
    _pickle_gz(src, traces(9))
    real_write = PickleSplitter.write

    def bad_crc(self, payload, part, **kw):  # the pickle loads fine; only the gzip CRC is wrong
        real_write(self, payload, part, **kw)
        data = bytearray(part.read_bytes())
        data[-8] ^= 0xFF
        part.write_bytes(bytes(data))

    monkeypatch.setattr(PickleSplitter, "write", bad_crc)
    with pytest.raises(SplitValidationError, match=r"does not load back: it is not a valid gzip file \(CRC check failed"):
        split_files(SplitOptions(str(src), str(tmp_path / "o"), traces_per_batch=3))
    assert outputs(tmp_path / "o") == []


def test_a_full_disk_removes_partial_outputs_and_keeps_the_original(tmp_path: Path) -> None:
    src = tmp_path / "big.pkl.gz"
    _pickle_gz(src, [np.random.default_rng(i).random(1000) for i in range(100)])  # ~800 KB unpickled
    before = sha(src)
    r = _split_with_a_tiny_disk(tmp_path, src)
    assert r.returncode == 2, r.stderr
    assert "partial outputs were removed and the input is untouched" in r.stderr
    assert sha(src) == before


# ------------------------------------------------------------------------------- cancel, reruns
def test_cancel_mid_split_leaves_no_outputs_and_the_input_intact(tmp_path: Path) -> None:
    src = tmp_path / "b.pkl.gz"
    _pickle_gz(src, [np.random.default_rng(i).random(2000) for i in range(600)])  # 300 sub-batches to write
    before = sha(src)

    def on_change(kind: str, view: JobView) -> None:
        if view.state == "running" and view.phase == "split" and view.done >= 1:
            runner.cancel(view.id)

    runner = JobRunner(on_change)
    view = runner.start_job(SplitJob(SplitOptions(str(src), str(tmp_path / "o"), traces_per_batch=2, workers=1)))
    final = runner.wait(view.id, 120)
    assert final.state == "cancelled" and final.result["cancelled"] is True
    assert outputs(tmp_path / "o") == []
    assert sha(src) == before


def test_existing_outputs_are_kept_unless_overwrite_or_skip(tmp_path: Path) -> None:
    src = tmp_path / "b.pkl.gz"
    _pickle_gz(src, traces(10))
    o = tmp_path / "o"
    split_files(SplitOptions(str(src), str(o), traces_per_batch=2))  # 5 files
    with pytest.raises(SplitError, match="--overwrite"):
        split_files(SplitOptions(str(src), str(o), traces_per_batch=5))
    skipped = split_files(SplitOptions(str(src), str(o), traces_per_batch=5, skip_existing=True))
    assert skipped.results[0].skipped and len(outputs(o)) == 5
    split_files(SplitOptions(str(src), str(o), traces_per_batch=5, overwrite=True))
    assert [p.name for p in outputs(o)] == ["b_sub0000.pkl.gz", "b_sub0001.pkl.gz"]  # the old extra three are gone
    assert len(_load_pickle(o / "b_sub0001.pkl.gz")) == 5


def test_part_files_of_a_killed_split_are_cleaned_and_a_live_ones_respected(tmp_path: Path) -> None:
    src = tmp_path / "b.pkl.gz"
    _pickle_gz(src, traces(4))
    o = tmp_path / "o"
    o.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (o / f"b_sub0000.pkl.gz.{dead.stdout.strip()}.part").write_bytes(b"half")
    split_files(SplitOptions(str(src), str(o), traces_per_batch=2))
    assert [p.name for p in outputs(o)] == ["b_sub0000.pkl.gz", "b_sub0001.pkl.gz"]
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (o / f"b_sub0000.pkl.gz.{live.pid}.part").write_bytes(b"being written")
        with pytest.raises(SplitError, match=f"another split \\(pid {live.pid}\\)"):
            split_files(SplitOptions(str(src), str(o), traces_per_batch=2, overwrite=True))
    finally:
        live.kill()
        live.wait()


def test_recommend_follows_the_seed_table_and_uses_the_item_size_when_known(tmp_path: Path) -> None:
    gb = 1000**3
    assert (recommend(12 * gb).low, recommend(12 * gb).high) == (100, 150)
    assert (recommend(24 * gb).low, recommend(24 * gb).high) == (200, 250)
    assert (recommend(48 * gb).low, recommend(48 * gb).high) == (250, 500)
    assert (recommend(100 * gb).low, recommend(100 * gb).high) == (500, 1000)
    r = recommend(24 * gb, item_bytes=14 * 1000**2)  # seed 002's 14 MB traces
    assert r.traces_per_batch == 24 * gb // 2 // 3 // (14 * 1000**2)
    np.save(tmp_path / "x.npy", np.zeros((10, 1000), dtype=np.float32))
    out = run_cli("split", "--recommend", "-i", str(tmp_path / "x.npy"), "--json")
    data = json.loads(out.stdout)
    assert out.returncode == 0 and data["item_bytes"] == 4000 and data["traces_per_batch"] >= 1
    text = run_cli("split", "--recommend", "-i", str(tmp_path / "x.npy"))
    assert text.returncode == 0 and "RAM table" in text.stdout
    assert "seed" not in (text.stdout + recommend(12 * gb).describe()).lower()  # field-note jargon stays in the docs


def test_gzip_outputs_use_run_length_coding_only_where_it_costs_nothing() -> None:
    import io
    import zlib

    from cachewatch.engine.jobs.split_pickle import AdaptiveGzipWriter

    def write(obj: Any) -> tuple[bytes, int | None]:
        buf = io.BytesIO()
        w = AdaptiveGzipWriter(buf, 6)
        pickle.Pickler(w, protocol=5).dump(obj)
        w.close()
        return buf.getvalue(), w.strategy

    noise = [np.random.default_rng(i).standard_normal(300_000).astype(np.float16) for i in range(8)]
    text = [("the same sentence, again and again. " * 2000 + str(i)) for i in range(100)]
    for obj, expected in ((noise, zlib.Z_RLE), (text, zlib.Z_DEFAULT_STRATEGY)):
        data, strategy = write(obj)
        assert strategy == expected
        assert deep_equal(pickle.loads(gzip.decompress(data)), obj)
        assert write(obj)[0] == data  # deterministic
        level6 = len(gzip.compress(pickle.dumps(obj, protocol=5), 6))
        assert len(data) <= level6 * 1.005


# ------------------------------------------------------------------ corrupt gzip inputs (issue 9.1)
def _flip_positions(n: int) -> list[int]:
    """Header bytes, every trailer byte (CRC32 and length), and positions spread over the deflate data."""
    body = list(range(10, n - 8, max(1, (n - 18) // 48)))
    return sorted(set([0, 3, 4, 8, 9] + body + list(range(n - 8, n))))


def test_a_gzip_input_with_a_flipped_bit_is_refused_or_splits_to_identical_items(tmp_path: Path) -> None:
    items = [{"id": i, "x": np.arange(i, i + 40, dtype=np.float32), "s": "trace " * (i % 5)} for i in range(24)]
    good = tmp_path / "good.pkl.gz"
    _pickle_gz(good, items)
    data = good.read_bytes()
    refused = accepted = 0
    for pos in _flip_positions(len(data)):
        bit = pos % 8
        d = tmp_path / f"flip{pos}"
        d.mkdir()
        src = d / "b.pkl.gz"
        flipped = bytearray(data)
        flipped[pos] ^= 1 << bit
        src.write_bytes(bytes(flipped))
        gzip_ok = subprocess.run(["gzip", "-t", str(src)], capture_output=True).returncode == 0
        out = d / "o"
        try:
            split_files(SplitOptions(str(src), str(out), traces_per_batch=5, delete_original=True, workers=2))
        except SplitInputError as exc:
            refused += 1
            msg = str(exc)
            assert str(src) in msg and "\n" not in msg, (pos, msg)
            assert src.read_bytes() == bytes(flipped), pos  # the original is untouched, never deleted
            assert outputs(out) == [], pos  # no output, no .part file
            continue
        accepted += 1
        # Only a flip that changes nothing the data depends on may be accepted (an mtime, an OS byte):
        assert gzip_ok, f"byte {pos} bit {bit}: gzip -t fails, yet split accepted it"
        got = sum((_load_pickle(p) for p in outputs(out)), [])
        assert len(got) == len(items) and all(deep_equal(a, b) for a, b in zip(items, got)), pos
    assert refused >= 40 and accepted >= 1  # the sweep really hit both kinds


def test_a_corrupt_gzip_input_is_refused_by_the_command_in_one_line(tmp_path: Path) -> None:
    src = tmp_path / "b.pkl.gz"
    _pickle_gz(src, traces(12))
    data = bytearray(src.read_bytes())
    data[-6] ^= 0x10  # in the CRC32: the items load fine, only the check fails
    src.write_bytes(bytes(data))
    r = run_cli("split", "-i", str(src), "-o", str(tmp_path / "o"), "-n", "4", "--delete-original", "--yes", "--quiet")
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(src) in lines[0] and "CRC check failed" in lines[0], r.stderr
    assert src.read_bytes() == bytes(data) and outputs(tmp_path / "o") == []


def test_a_split_killed_while_publishing_leaves_no_half_set_and_never_the_only_copy_lost(tmp_path: Path) -> None:
    from cachewatch.engine.jobs.split import undo_dead_split

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    src = tmp_path / "b.pkl.gz"
    _pickle_gz(src, traces(6))
    o = tmp_path / "o"
    o.mkdir()
    (o / "other_sub0000.pkl.gz").write_bytes(b"not ours")

    def killed_between_two_renames() -> None:  # sub0000 published, sub0001 still a .part; the manifest says which set
        (o / "b_sub0000.pkl.gz").write_bytes(b"validated")
        (o / f"b_sub0001.pkl.gz.{pid}.part").write_bytes(b"validated")
        (o / f".split.{pid}.publishing").write_text(f"{src.resolve()}\nb_sub0000.pkl.gz\nb_sub0001.pkl.gz\n")

    killed_between_two_renames()
    undo_dead_split(o, pid)  # what the engine runs when its split process dies
    assert [p.name for p in outputs(o)] == ["other_sub0000.pkl.gz"]
    # the next split into the same directory does the same for a dead CLI split, then its own work
    killed_between_two_renames()
    split_files(SplitOptions(str(src), str(o), traces_per_batch=3, overwrite=True))
    assert [p.name for p in outputs(o)] == ["b_sub0000.pkl.gz", "b_sub0001.pkl.gz", "other_sub0000.pkl.gz"]
    assert len(_load_pickle(o / "b_sub0000.pkl.gz")) == 3
    # killed after deleting its input: the published set is the only copy and stays
    gone = tmp_path / "gone.pkl.gz"
    (o / "gone_sub0000.pkl.gz").write_bytes(b"only copy")
    (o / f".split.{pid}.publishing").write_text(f"{gone}\ngone_sub0000.pkl.gz\n")
    undo_dead_split(o, pid)
    assert (o / "gone_sub0000.pkl.gz").read_bytes() == b"only copy"
    assert not (o / f".split.{pid}.publishing").exists()
