"""The Redis-indexed cache, one process at a time: its API, leases, quarantine and reconciler,
Redis unreachable or lost, verify --repair, config and reports. A real redis-server each test.

(The many-process and many-"node" fault tests live in tests/cache/redis/.)
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cachewatch.engine import Cache
from cachewatch.engine.cache.redis_cache import RedisCache
from cachewatch.engine.errors import CacheError, CacheIndexUnavailable, CacheRootError, ConfigError
from tests.fleet.redis_server import REDIS_MISSING, RedisServer
from tests.support.helpers import run_cli


@pytest.fixture
def redis(redis_aof: RedisServer) -> RedisServer:
    return redis_aof


def _open(root: Path, redis: RedisServer, **kw) -> RedisCache:
    kw.setdefault("max_size", "256KiB")
    c = Cache(root, index=redis.url, node=kw.pop("node", "n1"), **kw)
    assert isinstance(c, RedisCache)
    return c


def _files(root: Path) -> dict[str, bytes]:
    out = {}
    for shard in root.iterdir():
        if shard.name == ".cachewatch":
            continue
        for f in shard.iterdir():
            out[f"{shard.name}/{f.name}"] = f.read_bytes()
    return out


def test_put_get_read_replace_delete_and_reopen_by_marker(tmp_path: Path, redis: RedisServer) -> None:
    root = tmp_path / "c"
    with _open(root, redis) as c:
        p1 = c.put("train/a.npz", b"one")
        p2 = c.put("train/a.npz", b"two")  # a new version under a new name; the old file goes
        assert p1 != p2 and not p1.exists() and p2.read_bytes() == b"two"
        assert c.read("train/a.npz") == b"two" and c.get("train/a.npz") == p2
        assert "train/a.npz" in c and len(c) == 1
        c.put("b", b"x" * 5000)
        s = c.stats()
        assert (s.entries, s.data_bytes, s.size_bytes) == (2, 5003, 2 * s.block_bytes + 4096)
        assert s.index == redis.url and s.nodes == ("n1",) and s.index_id
        assert c.delete("b") is True and c.delete("b") is False and c.get("b") is None
        marker = json.loads((root / ".cachewatch" / "redis.json").read_text())
        assert marker["url"] == redis.url and marker["uuid"] == s.index_id
    # Cache(root) alone finds its Redis through the marker; the index says what the files are.
    with Cache(root) as again:
        assert isinstance(again, RedisCache)
        assert again.read("train/a.npz") == b"two"
        assert list(_files(root).values()) == [b"two"]


def test_bound_holds_and_lru_evicts_oldest_first(tmp_path: Path, redis: RedisServer) -> None:
    root = tmp_path / "c"
    with _open(root, redis, max_size="64KiB", target_size="48KiB") as c:
        for i in range(8):
            c.put(f"k{i}", b"v" * 4096)
        c.get("k0")  # k0 becomes the most recently used
        c.flush()
        for i in range(8, 13):  # the 13th entry passes the 48 KiB target: a little below it is evicted
            c.put(f"k{i}", b"v" * 4096)
        s = c.stats()
        assert s.used_bytes <= s.max_bytes and s.evicted_files > 0
        assert "k0" in c and "k1" not in c  # least recently used went first
        for i in range(13, 40):
            c.put(f"k{i}", b"v" * 4096)
            used = sum(-(-len(v) // 4096) * 4096 for v in _files(root).values())
            assert used <= c.max_bytes
        s = c.stats()
        log = c.eviction_log()
        assert log and log[0].reason == "size" and sum(r.files for r in log) == s.evicted_files


def test_pinned_entry_is_never_evicted_and_a_dead_pin_lapses(tmp_path: Path, redis: RedisServer) -> None:
    root = tmp_path / "c"
    with _open(root, redis, max_size="64KiB", target_size="32KiB", pin_lease_s=0.5) as c:
        c.put("keep", b"k" * 4096)
        with c.pin("keep") as path:
            for i in range(40):
                c.put(f"f{i}", b"v" * 4096)
            assert path.read_bytes() == b"k" * 4096 and "keep" in c
        # A reader that dies holding a pin: its lease lapses and the entry is evictable again.
        code = (
            "import sys, os; from cachewatch.engine import Cache\n"
            f"c = Cache({str(root)!r}, pin_lease_s=0.5); cm = c.pin('keep'); cm.__enter__(); print('pinned', flush=True); os._exit(0)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert "pinned" in out.stdout, out.stderr
        report = c.evict(to=0)
        assert "keep" not in report.keys and "keep" in c  # the dead reader's pin still holds...
        time.sleep(0.8)
        report = c.evict(to=0)
        assert "keep" in report.keys and "keep" not in c  # ...until its lease lapsed


def test_expired_lease_is_quarantined_then_reconciled_and_the_writer_is_fenced(tmp_path: Path, redis: RedisServer) -> None:
    """A writer stalled past its lease: the bytes stay counted (quarantined) until the reconciler
    has tombstoned its .part; then it can neither create nor link that file."""
    root = tmp_path / "c"
    with _open(root, redis, lease_s=0.3) as c:
        fence, name, part = c._reserve("slow", 8192, "aa/slow")
        c._renewer.wake.set()  # (the thread renews only leases it knows; forget ours: a stalled writer)
        with c._lock:
            c._leases.clear()
        part_path = root / ".cachewatch" / "tmp" / part
        part_path.write_bytes(b"s" * 8192)  # what the stalled writer had written
        time.sleep(0.6)
        assert c._counters()["reserved"] == 8192  # expired on the server, not settled by any script yet ...
        s = c.stats()
        assert (s.reserved_bytes, s.quarantined_bytes) == (0, 8192)  # ... but stats say what it is
        c._script("claim", 0, 0)  # any script settles it: reserved -> quarantined, still counted
        raw = c._counters()
        assert (raw["reserved"], raw["quarantined"]) == (0, 8192)
        assert c.reconcile() == 1
        assert c.stats().quarantined_bytes == 0
        assert part_path.is_dir()  # the tombstone
        with pytest.raises(FileExistsError):
            os.open(part_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        # Its commit is refused: the lease is gone, on the server's clock.
        res = c._script("commit", fence, "slow", json.dumps({"n": name, "s": 1, "c": 4096}), 1, 4096, name, 1000)
        assert int(res[0]) == 0 and "slow" not in c


def test_link_of_a_reconciled_part_fails(tmp_path: Path) -> None:
    from cachewatch.engine.cache.redis_cache import _LeaseLost, _link_fd, _tombstone

    part = tmp_path / "w.part"
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        os.write(fd, b"data")
        _tombstone(str(part))  # the reconciler: unlink the .part, leave a directory in its place
        with pytest.raises(_LeaseLost):
            _link_fd(fd, str(tmp_path / "final"))
        assert not (tmp_path / "final").exists()
    finally:
        os.close(fd)


def test_put_of_a_stalled_writer_is_refused_and_leaves_nothing(tmp_path: Path, redis: RedisServer) -> None:
    """The whole put path with a lease that expires mid-write (a value written slower than the lease)."""
    root = tmp_path / "c"
    with _open(root, redis, lease_s=0.2) as c:
        real = c._write_view

        def slow(fd, view, fence):  # type: ignore[no-untyped-def]
            with c._lock:  # the renewer stops renewing (as for a stopped process) ...
                c._leases[fence] = time.monotonic() + 10
                c._lost.add(fence)  # ... and learns that the server let the lease go
            return real(fd, view, fence)

        c._write_view = slow  # type: ignore[method-assign]
        with pytest.raises(CacheError, match="lease"):
            c.put("k", b"x" * 10000)
        c._write_view = real  # type: ignore[method-assign]
        time.sleep(0.3)
        c.reconcile()
        s = c.stats()
        assert (s.entries, s.reserved_bytes, s.quarantined_bytes) == (0, 0, 0)
        assert _files(root) == {}
        assert not [p for p in (root / ".cachewatch" / "tmp").iterdir() if p.is_file()]


def test_redis_down_refuses_puts_by_url_and_reads_still_work(tmp_path: Path, redis: RedisServer) -> None:
    root = tmp_path / "c"
    with _open(root, redis, timeout_s=1.0) as c:
        c.put("a", b"alpha")
        c.put("a", b"alpha2")
        redis.stop()
        t0 = time.monotonic()
        with pytest.raises(CacheIndexUnavailable, match=r"redis://127\.0\.0\.1:\d+/0"):
            c.put("b", b"beta")
        assert time.monotonic() - t0 < 10
        assert c.read("a") == b"alpha2" and c.get("a") is not None  # the newest version on disk
        assert c.get("b") is None
        assert sorted(_files(root).values()) == [b"alpha2"]  # the refused put left nothing
        redis.start()  # AOF: the index comes back
        c.put("b", b"beta")
        assert c.read("b") == b"beta" and c.stats().entries == 2


def test_lost_index_is_refused_with_the_rebuild_command_and_verify_rebuilds(tmp_path: Path, redis: RedisServer) -> None:
    root = tmp_path / "c"
    with _open(root, redis) as c:
        for i in range(10):
            c.put(f"k{i}", f"v{i}".encode())
        c.put("k3", b"newest")
    redis.client().flushall()
    with pytest.raises(CacheRootError, match=r"verify .* --repair --max-size"):
        Cache(root)
    r = run_cli("verify", str(root))
    assert r.returncode != 0 and "--repair" in r.stderr
    r = run_cli("verify", str(root), "--repair", "--max-size", "256KiB")
    assert r.returncode == 0, r.stdout + r.stderr
    with Cache(root) as c:
        assert c.stats().entries == 10 and c.read("k3") == b"newest"
        c.put("k11", b"after")  # the fence counter was restored above every file's
        assert c.read("k11") == b"after"
    assert run_cli("verify", str(root)).returncode == 0


def test_verify_repair_reindexes_orphans_and_drops_missing(tmp_path: Path, redis: RedisServer) -> None:
    root = tmp_path / "c"
    with _open(root, redis) as c:
        pa = c.put("a", b"aaa")
        c.put("b", b"bbb")
        pa.unlink()  # a file lost behind the index's back
        c._script("drop_row", "b", c._row("b").name)  # a row lost (a Redis restart without fsync)
    r = run_cli("verify", str(root), "--json")
    kinds = sorted(p["kind"] for p in json.loads(r.stdout)["problems"])
    assert kinds == ["missing_file", "orphan_file"]  # (drop_row kept the counters right)
    assert run_cli("verify", str(root), "--repair").returncode == 0
    with Cache(root) as c:
        assert "a" not in c and c.read("b") == b"bbb"
        s = c.stats()
        assert s.entries == 1 and s.size_bytes == s.block_bytes
    assert run_cli("verify", str(root)).returncode == 0


def test_one_root_one_index(tmp_path: Path, redis: RedisServer) -> None:
    sqlite_root = tmp_path / "s"
    Cache(sqlite_root, max_size="1MiB").close()
    with pytest.raises(CacheRootError, match="SQLite index"):
        Cache(sqlite_root, index=redis.url)
    with pytest.raises(CacheError, match="not a cache index"):
        Cache(tmp_path / "x", max_size="1MiB", index="memcached://h")
    # Two roots on one Redis do not mix; a root pointed at another cache's prefix is refused.
    a = _open(tmp_path / "a", redis)
    b = _open(tmp_path / "b", redis)
    a.put("k", b"a")
    assert "k" not in b
    prefix = a._prefix
    a.close()
    b.close()
    marker = tmp_path / "b" / ".cachewatch" / "redis.json"
    m = json.loads(marker.read_text())
    m["prefix"] = prefix
    marker.write_text(json.dumps(m))
    with pytest.raises(CacheRootError, match="indexes another cache"):
        Cache(tmp_path / "b")


def test_limits_are_stored_once_and_resize_changes_them(tmp_path: Path, redis: RedisServer) -> None:
    root = tmp_path / "c"
    with _open(root, redis, max_size="64KiB") as c:
        for i in range(12):
            c.put(f"k{i}", b"v" * 4096)
    with _open(root, redis, max_size="1MiB") as c2:
        assert c2.max_bytes == 64 * 1024 and c2.limits_note and "resize" in c2.limits_note
    with _open(root, redis, max_size="32KiB", resize=True) as c3:
        s = c3.stats()
        assert s.max_bytes == 32 * 1024 and s.used_bytes <= 32 * 1024


def test_pickled_cache_reopens_in_a_spawned_process(tmp_path: Path, redis: RedisServer) -> None:
    root = tmp_path / "c"
    with _open(root, redis, node="trainer-1") as c:
        c.put("k", b"v")
        blob = pickle.dumps(c)
    code = (
        "import pickle, sys\n"
        "c = pickle.loads(sys.stdin.buffer.read())\n"
        "c.put('from-child', b'c'); print(type(c).__name__, c.node, c.read('k').decode())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, timeout=60)
    assert out.stdout.decode().split() == ["RedisCache", "trainer-1", "v"], out.stderr.decode()
    with Cache(root) as c:
        assert c.read("from-child") == b"c"


def test_config_index_node_and_lease(tmp_path: Path, redis: RedisServer) -> None:
    from cachewatch.engine.config import load_config

    cfg_file = tmp_path / "cachewatch.toml"
    cfg_file.write_text(
        f'[cache]\nroot = "c"\nmax_size = "1MiB"\nindex = "{redis.url}"\nnode = "gpu-07"\nlease = "3s"\n'
    )
    with Cache.from_config(str(cfg_file)) as c:
        assert isinstance(c, RedisCache) and c.node == "gpu-07" and c.lease_s == 3.0
        c.put("k", b"v")
        assert c.stats().nodes == ("gpu-07",)
    cfg_file.write_text('[cache]\nroot = "c"\nmax_size = "1MiB"\nindex = "mysql://x"\n')
    with pytest.raises(ConfigError, match=r"\[cache\] index|index"):
        load_config(str(cfg_file))
    r = run_cli("cache", "stats", str(tmp_path / "c"), "--json")
    stats = json.loads(r.stdout)
    assert stats["index"] == redis.url and stats["nodes"] == ["gpu-07"] and stats["entries"] == 1


def test_fleet_view_lists_which_nodes_write_to_which_shared_cache(tmp_path: Path, redis: RedisServer) -> None:
    from cachewatch.engine.cli.fleet_cmd import format_shared
    from cachewatch.engine.fleet.summary import CacheLine, FleetSummary, shared_caches

    with _open(tmp_path / "c", redis, node="n1") as c:
        c.put("k", b"v")
    with _open(tmp_path / "c", redis, node="n2") as c:
        c.put("k2", b"v")
        s = c.stats()
    assert s.nodes == ("n1", "n2")

    def summary(host: str) -> FleetSummary:
        line = CacheLine(s.root, "cache", s.used_bytes, s.target_bytes, s.max_bytes, None, index=s.index,
                         index_id=s.index_id, nodes=s.nodes)
        return FleetSummary.from_json(json.loads(json.dumps(
            FleetSummary(host, "eng", 1, "0", 0.0, 0.0, 1.0, caches=(line,)).to_json())))

    sums = [summary("h1"), summary("h2")]
    assert shared_caches(sums) == [(s.index_id, redis.url, ("n1", "n2"), ("h1/eng", "h2/eng"))]

    class Row:
        def __init__(self, summ: FleetSummary) -> None:
            self.summary, self.lost = summ, False

    class View:
        rows = [Row(x) for x in sums]

    text = "\n".join(format_shared(View()))
    assert "SHARED CACHES" in text and "n1, n2" in text and "h1/eng, h2/eng" in text


def test_ttl_expires_old_entries_by_the_servers_clock(tmp_path: Path, redis: RedisServer) -> None:
    root = tmp_path / "c"
    with _open(root, redis, ttl=0.5) as c:
        c.put("old", b"o")
        time.sleep(0.7)
        c.put("new", b"n")
        assert c.get("old") is None  # past its ttl: a miss at once, before anything removes it
        report = c.expire()
        assert report.keys == ("old",) and report.files == 1
        assert "new" in c and c.stats().entries == 1 and c.stats().expired_files == 1
        assert sorted(_files(root).values()) == [b"n"]


def test_an_evictor_killed_holding_the_lock_holds_others_up_one_lease_only(tmp_path: Path, redis: RedisServer) -> None:
    root = tmp_path / "c"
    with _open(root, redis, lease_s=0.5) as c:
        code = (
            "import os; from cachewatch.engine import Cache\n"
            f"c = Cache({str(root)!r}, lease_s=0.5)\n"
            "cm = c._evictor(1.0); assert cm.__enter__(); print('locked', flush=True); os._exit(0)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert "locked" in out.stdout, out.stderr
        with c._evictor(0.0) as got:
            assert not got  # the dead evictor's lock is still there ...
        t0 = time.monotonic()
        with c._evictor(5.0) as got:
            assert got  # ... for one lease, not longer
        assert time.monotonic() - t0 < 3.0


def test_password_is_never_written_to_the_root_and_comes_from_the_environment(tmp_path: Path) -> None:
    try:
        server = RedisServer(tmp_path / "redis-auth")
    except RuntimeError:
        pytest.fail(REDIS_MISSING)
    server.start()
    server.client().config_set("requirepass", "s3cret")
    try:
        url = f"redis://:s3cret@127.0.0.1:{server.port}/0"
        root = tmp_path / "c"
        with Cache(root, max_size="1MiB", index=url, node="n1") as c:
            c.put("k", b"v")
            assert "s3cret" not in repr(c) and "s3cret" not in str(c.stats().to_json())
        assert "s3cret" not in (root / ".cachewatch" / "redis.json").read_text()
        with pytest.raises(CacheError, match=r"refused the credentials.*CACHEWATCH_CACHE_INDEX"):
            Cache(root)
        code = "from cachewatch.engine import Cache; import sys; print(Cache(sys.argv[1]).read('k').decode())"
        env = {**os.environ, "CACHEWATCH_CACHE_INDEX": url}
        out = subprocess.run([sys.executable, "-c", code, str(root)], env=env, capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == "v", out.stderr
    finally:
        server.stop()


def test_reads_through_an_outage_ask_redis_once_per_window(tmp_path: Path, redis: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A DataLoader reading through a partition must not wait timeout_s per item: after one failed
    lookup, reads go to the files for a while, then ask Redis again."""
    import cachewatch.engine.cache.redis_cache as rc

    monkeypatch.setattr(rc, "_DOWN_RETRY_S", 1.0)
    root = tmp_path / "c"
    with _open(root, redis, timeout_s=1.0) as c:
        for i in range(5):
            c.put(f"k{i}", f"v{i}".encode())
        asked = []
        real_row = c._row
        c._row = lambda key: (asked.append(key), real_row(key))[1]  # type: ignore[method-assign]
        redis.stop()
        assert [c.read(f"k{i % 5}") for i in range(20)] == [f"v{i % 5}".encode() for i in range(20)]
        assert len(asked) == 1  # one lookup met the outage; the other 19 went to the files
        redis.start()
        time.sleep(1.2)
        assert c.read("k1") == b"v1" and len(asked) == 2  # the window over: Redis again
        assert c.read("k2") == b"v2" and len(asked) == 3


def test_url_prefix_names_the_keys_and_redis_py_options_pass_through(tmp_path: Path, redis: RedisServer) -> None:
    url = f"{redis.url}?prefix=team-a:cache&health_check_interval=7"
    with Cache(tmp_path / "c", max_size="1MiB", index=url, node="n1") as c:
        c.put("k", b"v")
        assert c._redis.connection_pool.connection_kwargs.get("health_check_interval") == 7
    keys = sorted(k.decode() for k in redis.client().keys("*"))
    assert keys and all(k.startswith("team-a:cache:") for k in keys)
    with Cache(tmp_path / "c") as again:  # the marker keeps the prefix
        assert again.read("k") == b"v"
