"""Push and pull through a real S3 HTTP endpoint (moto's server in its own process, see conftest)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cachewatch.engine.cache import Cache
from cachewatch.engine.sync import pull, push
from cachewatch.engine.sync.manifest import manifest_name
from tests.support.helpers import run_cli
from tests.sync.util import cache_content, make_cache


def _bucket_prefix(url: str) -> tuple[str, str]:
    bucket, _, prefix = url[len("s3://"):].partition("/")
    return bucket, prefix + "/"


def test_push_pull_round_trip_over_s3_verifies_clean(tmp_path: Path, s3_server, s3_url: str) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    content = make_cache(src, files=30)
    env = s3_server.env()
    r = run_cli("cache", "push", str(src), s3_url, "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["committed"]
    bucket, prefix = _bucket_prefix(s3_url)
    listed = s3_server.client().list_objects_v2(Bucket=bucket, Prefix=prefix + "manifests/")
    assert [o["Key"] for o in listed["Contents"]] == [prefix + manifest_name(1)]

    objs = s3_server.client().list_objects_v2(Bucket=bucket, Prefix=prefix + "objects/")["Contents"]
    assert len(objs) == 30
    head = s3_server.client().head_object(Bucket=bucket, Key=objs[0]["Key"], ChecksumMode="ENABLED")
    assert head.get("ChecksumCRC32")  # uploaded with a payload checksum the server verified and kept
    assert head["Metadata"]["xxh3"] == objs[0]["Key"].rsplit("/", 1)[-1].split("-")[0]

    again = run_cli("cache", "push", str(src), s3_url, "--json", env=env)
    rep = json.loads(again.stdout)
    assert rep["files_transferred"] == 0 and rep["up_to_date"]

    r = run_cli("cache", "pull", s3_url, str(dst), "--max-size", "20MB", env=env)
    assert r.returncode == 0, r.stderr
    assert cache_content(dst) == content
    assert run_cli("verify", str(dst), "--no-source").returncode == 0


def test_an_object_corrupted_on_the_server_is_refused(tmp_path: Path, s3_server, s3_url: str) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    content = make_cache(src, files=8)
    env = s3_server.env()
    assert run_cli("cache", "push", str(src), s3_url, env=env).returncode == 0
    client = s3_server.client()
    bucket, prefix = _bucket_prefix(s3_url)
    objs = client.list_objects_v2(Bucket=bucket, Prefix=prefix + "objects/")["Contents"]
    victim = objs[0]["Key"]
    body = bytearray(client.get_object(Bucket=bucket, Key=victim)["Body"].read())
    body[0] ^= 0xFF
    client.put_object(Bucket=bucket, Key=victim, Body=bytes(body))  # same name, other bytes
    r = run_cli("cache", "pull", s3_url, str(dst), "--max-size", "20MB", env=env)
    assert r.returncode == 1
    assert "corrupt or foreign" in r.stderr and victim.rsplit("/", 1)[-1] in r.stderr
    got = cache_content(dst)
    assert len(got) == 7 and all(content[k] == v for k, v in got.items())
    assert run_cli("verify", str(dst), "--no-source").returncode == 0


def test_missing_credentials_is_one_clear_line(tmp_path: Path, s3_server, s3_url: str) -> None:
    make_cache(tmp_path / "src", files=2)
    env = s3_server.env(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"))
    env["AWS_ACCESS_KEY_ID"] = ""
    env["AWS_SECRET_ACCESS_KEY"] = ""
    r = run_cli("cache", "push", str(tmp_path / "src"), s3_url, env=env)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no AWS credentials found" in lines[0] and s3_url in lines[0]


def test_wrong_credentials_are_one_clear_line(tmp_path: Path) -> None:
    from tests.sync.conftest import start_moto, stop_moto

    # A server that checks keys: moto enforces authentication after this many free requests.
    server = start_moto(tmp_path / "moto-auth", INITIAL_NO_AUTH_ACTION_COUNT="0")
    try:
        make_cache(tmp_path / "src", files=2)
        r = run_cli("cache", "push", str(tmp_path / "src"), "s3://locked-bucket/x", env=server.env())
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "credentials rejected" in lines[0] and "InvalidAccessKeyId" in lines[0]
    finally:
        stop_moto(server)


def test_missing_bucket_is_one_clear_line(tmp_path: Path, s3_server) -> None:
    r = run_cli("cache", "pull", "s3://no-such-bucket-here/p", str(tmp_path / "dst"), "--max-size", "1MB", env=s3_server.env())
    assert r.returncode == 2 and "bucket 'no-such-bucket-here' does not exist" in r.stderr


def test_large_entries_go_multipart_and_come_back_intact(tmp_path: Path, s3_env, s3_server, s3_url: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from cachewatch.engine.sync import s3 as s3mod
    from cachewatch.engine.sync import transfer

    # Real multipart on a real endpoint, at test sizes: 5 MiB is S3's smallest part.
    monkeypatch.setattr(s3mod, "MULTIPART_THRESHOLD_BYTES", 5 * 1024 * 1024)
    monkeypatch.setattr(s3mod, "MULTIPART_CHUNK_BYTES", 5 * 1024 * 1024)
    monkeypatch.setattr(transfer, "INLINE_MAX_BYTES", 1024 * 1024)
    from cachewatch.engine.sync import open_remote

    big = (bytes(range(256)) * 48 * 1024)[: 12 * 1024 * 1024]
    with Cache(tmp_path / "src", max_size="100MB", sweep=False) as cache:
        cache.put("big.bin", big)
        cache.put("small.bin", b"x" * 1000)
        remote = open_remote(s3_url)
        rep = push(cache, remote)
    assert rep.committed and rep.files_transferred == 2
    bucket, prefix = _bucket_prefix(s3_url)
    client = s3_server.client()
    objs = {o["Key"]: o for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix + "objects/")["Contents"]}
    big_key = next(k for k, o in objs.items() if o["Size"] == len(big))
    assert client.head_object(Bucket=bucket, Key=big_key)["ETag"].strip('"').endswith("-3")  # three parts
    progress = []
    with Cache(tmp_path / "dst", max_size="100MB", sweep=False) as dst:
        rep = pull(dst, open_remote(s3_url), on_progress=progress.append)
        assert rep.ok and rep.files_transferred == 2
        assert dst.read("big.bin") == big
    assert progress[-1].bytes_done == len(big) + 1000 and progress[-1].files_done == 2


def test_manifest_create_is_conditional_on_the_server(s3_env, s3_url: str) -> None:
    from cachewatch.engine.sync import open_remote

    remote = open_remote(s3_url)
    assert remote.create_manifest(manifest_name(1), b"first")
    assert not remote.create_manifest(manifest_name(1), b"second")
    assert remote.conditional_writes  # the server honoured If-None-Match, no fallback used
    assert remote.get_bytes(manifest_name(1)) == b"first"
