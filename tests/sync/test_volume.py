"""Push and pull through a directory remote (a mounted volume): real files, the real command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cachewatch.engine.sync import VolumeRemote
from cachewatch.engine.sync.manifest import Manifest, manifest_name
from tests.support.helpers import run_cli
from tests.sync.util import cache_content, entry_count, flip_byte, make_cache, object_files, write_config


def _json(proc) -> dict:  # type: ignore[no-untyped-def]
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


def test_push_then_pull_into_an_empty_cache_is_identical_and_verifies_clean(tmp_path: Path) -> None:
    src, remote, dst = tmp_path / "src", tmp_path / "remote", tmp_path / "dst"
    content = make_cache(src, files=40)
    push = run_cli("cache", "push", str(src), str(remote), "--json")
    assert push.returncode == 0, push.stderr
    rep = _json(push)
    assert rep["committed"] and rep["manifest_seq"] == 1 and rep["files_transferred"] == 40
    m = Manifest.from_bytes((remote / manifest_name(1)).read_bytes(), "m")
    assert sorted(e.key for e in m.entries) == sorted(content)

    pull = run_cli("cache", "pull", str(remote), str(dst), "--max-size", "50MB")
    assert pull.returncode == 0, pull.stderr
    assert "downloaded 40 files" in pull.stdout
    assert "pull  downloading  40/40 files" in pull.stderr  # the progress line, with bytes done of total
    assert cache_content(dst) == content
    verify = run_cli("verify", str(dst), "--no-source")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_second_push_sends_nothing_and_a_change_sends_only_the_change(tmp_path: Path) -> None:
    from cachewatch.engine.cache import Cache

    src, remote = tmp_path / "src", tmp_path / "remote"
    make_cache(src, files=30)
    assert run_cli("cache", "push", str(src), str(remote)).returncode == 0
    again = _json(run_cli("cache", "push", str(src), str(remote), "--json"))
    assert again["files_transferred"] == 0 and again["files_skipped"] == 30
    assert again["up_to_date"] and not again["committed"]
    assert not (remote / manifest_name(2)).exists()

    with Cache(src, sweep=False) as cache:
        cache.put("train/shard0/item00000.npz", b"new content")
        cache.put("extra.bin", b"one more")
    before = set(object_files(remote))
    third = _json(run_cli("cache", "push", str(src), str(remote), "--json"))
    assert third["files_transferred"] == 2 and third["committed"] and third["manifest_seq"] == 2
    assert len(set(object_files(remote)) - before) == 2
    m = Manifest.from_bytes((remote / manifest_name(2)).read_bytes(), "m")
    assert len(m.entries) == 31


def test_dry_runs_write_nothing(tmp_path: Path) -> None:
    src, remote, dst = tmp_path / "src", tmp_path / "remote", tmp_path / "dst"
    make_cache(src, files=10)
    dry = run_cli("cache", "push", str(src), str(remote), "--dry-run", "--json")
    assert dry.returncode == 0 and _json(dry)["files_transferred"] == 10
    assert not remote.exists()
    assert run_cli("cache", "push", str(src), str(remote)).returncode == 0
    dry = run_cli("cache", "pull", str(remote), str(dst), "--max-size", "10MB", "--dry-run", "--json")
    assert dry.returncode == 0 and _json(dry)["files_transferred"] == 10
    assert not dst.exists()  # a dry run does not even create the cache


def test_a_corrupt_object_is_refused_and_the_rest_is_stored(tmp_path: Path) -> None:
    src, remote, dst = tmp_path / "src", tmp_path / "remote", tmp_path / "dst"
    content = make_cache(src, files=12)
    assert run_cli("cache", "push", str(src), str(remote)).returncode == 0
    victim = object_files(remote)[0]
    flip_byte(victim)
    pull = run_cli("cache", "pull", str(remote), str(dst), "--max-size", "10MB")
    assert pull.returncode == 1
    assert "corrupt or foreign" in pull.stderr and victim.name in pull.stderr
    got = cache_content(dst)
    assert len(got) == 11 and all(content[k] == v for k, v in got.items())
    assert run_cli("verify", str(dst), "--no-source").returncode == 0


def test_a_foreign_manifest_is_refused_with_one_line(tmp_path: Path) -> None:
    remote, dst = tmp_path / "remote", tmp_path / "dst"
    (remote / "manifests").mkdir(parents=True)
    (remote / manifest_name(1)).write_text(json.dumps({"format": "someone-else/3", "files": []}))
    pull = run_cli("cache", "pull", str(remote), str(dst), "--max-size", "10MB")
    assert pull.returncode == 1
    assert "is not a cachewatch manifest" in pull.stderr and "someone-else/3" in pull.stderr
    assert len(pull.stderr.strip().splitlines()) == 1


def test_a_manifest_bigger_than_max_size_is_refused_before_any_download(tmp_path: Path) -> None:
    src, remote, dst = tmp_path / "src", tmp_path / "remote", tmp_path / "dst"
    make_cache(src, files=20, size=100_000)  # about 2 MB
    assert run_cli("cache", "push", str(src), str(remote)).returncode == 0
    for obj in object_files(remote):  # an object read would now fail loudly; none must be read
        obj.chmod(0o000)
    pull = run_cli("cache", "pull", str(remote), str(dst), "--max-size", "1MB")
    assert pull.returncode == 2
    assert "more than max_size" in pull.stderr and "nothing was downloaded" in pull.stderr
    assert entry_count(dst) == 0


def test_nothing_pushed_yet_and_bad_urls_say_so(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    r = run_cli("cache", "pull", str(tmp_path / "empty"), str(tmp_path / "dst"), "--max-size", "1MB")
    assert r.returncode == 1 and "nothing has been pushed" in r.stderr
    r = run_cli("cache", "pull", "gs://bucket/x", str(tmp_path / "dst"), "--max-size", "1MB")
    assert r.returncode == 2 and "'gs://' is not supported" in r.stderr
    r = run_cli("cache", "pull", str(tmp_path / "missing"), str(tmp_path / "dst2"), "--max-size", "1MB")
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = run_cli("cache", "pull", str(tmp_path / "empty"), str(tmp_path / "dst3"))
    assert r.returncode == 2 and "--max-size" in r.stderr


def test_manifest_creation_is_create_only(tmp_path: Path) -> None:
    remote = VolumeRemote(tmp_path / "r", create=True)
    assert remote.create_manifest(manifest_name(1), b"first")
    assert not remote.create_manifest(manifest_name(1), b"second")
    assert (tmp_path / "r" / manifest_name(1)).read_bytes() == b"first"


def test_remote_and_root_from_the_config(tmp_path: Path) -> None:
    src, remote, dst = tmp_path / "src", tmp_path / "remote", tmp_path / "dst"
    content = make_cache(src, files=5)
    cfg_push = write_config(tmp_path / "push.toml", cache={"root": str(src), "remote": str(remote)})
    assert run_cli("-c", str(cfg_push), "cache", "push").returncode == 0
    cfg_pull = write_config(tmp_path / "pull.toml", cache={"root": str(dst), "remote": str(remote), "max_size": "10MB"})
    r = run_cli("-c", str(cfg_pull), "cache", "pull")
    assert r.returncode == 0, r.stderr
    assert cache_content(dst) == content


def test_push_records_the_source_fingerprint(tmp_path: Path) -> None:
    srcdir = tmp_path / "data"
    srcdir.mkdir()
    for i in range(3):
        (srcdir / f"f{i}.bin").write_bytes(bytes([i]) * 100)
    cfg = write_config(tmp_path / "c.toml", cache={"root": str(tmp_path / "cache"), "max_size": "10MB"},
                       source={"dir": str(srcdir), "glob": "*.bin"})
    assert run_cli("-c", str(cfg), "build").returncode == 0
    r = run_cli("-c", str(cfg), "cache", "push", str(tmp_path / "remote"), "--json")
    assert r.returncode == 0, r.stderr
    m = Manifest.from_bytes((tmp_path / "remote" / manifest_name(1)).read_bytes(), "m")
    assert m.source is not None and m.source.items == 3
    (srcdir / "f3.bin").write_bytes(b"more")  # another source: another fingerprint
    assert run_cli("-c", str(cfg), "build").returncode == 0
    r = run_cli("-c", str(cfg), "cache", "push", str(tmp_path / "remote"), "--json")
    m2 = Manifest.from_bytes((tmp_path / "remote" / manifest_name(2)).read_bytes(), "m")
    assert m2.source is not None and m2.source.items == 4 and m2.source.fingerprint != m.source.fingerprint


@pytest.mark.parametrize("bad", ["0", "-3"])
def test_bad_workers_is_a_usage_error(tmp_path: Path, bad: str) -> None:
    make_cache(tmp_path / "src", files=1)
    r = run_cli("cache", "push", str(tmp_path / "src"), str(tmp_path / "r"), "--workers", bad)
    assert r.returncode == 2 and "--workers" in r.stderr


def test_an_object_deleted_at_the_remote_is_sent_again_with_check_remote(tmp_path: Path) -> None:
    src, remote = tmp_path / "src", tmp_path / "remote"
    make_cache(src, files=6)
    assert run_cli("cache", "push", str(src), str(remote)).returncode == 0
    gone = object_files(remote)[0]
    gone.unlink()
    # By default the newest manifest is trusted (an unchanged push reads one manifest, lists nothing) ...
    plain = _json(run_cli("cache", "push", str(src), str(remote), "--json"))
    assert plain["up_to_date"] and not gone.exists()
    # ... --check-remote lists the objects and repairs the remote.
    checked = _json(run_cli("cache", "push", str(src), str(remote), "--check-remote", "--json"))
    assert checked["files_transferred"] == 1 and gone.exists()
