"""The TCP proxy the node cut-off tests rely on: it relays, and a cut really partitions one path."""

from __future__ import annotations

import socket

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.tcp_proxy import TcpProxy


def _client(port: int) -> redis.Redis:
    # no retries: redis-py's default (3, with backoff) would turn each expected failure into seconds
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5, socket_connect_timeout=0.5,
                       retry=Retry(NoBackoff(), 0))


def test_blackhole_cut_hangs_only_its_own_path_and_restore_reconnects(redis_server, proxy_to) -> None:
    cut, other = proxy_to(), proxy_to()
    a, b = _client(cut.port), _client(other.port)
    assert a.set("x", b"1") and b.get("x") == b"1"
    cut.cut("blackhole")
    # an open connection: the request is swallowed, the client times out (no reset, no answer)
    with pytest.raises(redis.TimeoutError):
        a.get("x")
    # a new connection is accepted by the kernel but never answered
    with pytest.raises(redis.TimeoutError):
        _client(cut.port).ping()
    assert b.get("x") == b"1", "the other node's path must keep working"
    assert b.set("y", b"2")
    cut.restore()
    assert _client(cut.port).get("y") == b"2"
    assert a.get("y") == b"2"  # the old client reconnects after the reset


def test_refuse_cut_resets_open_connections_and_refuses_new_ones(redis_server, proxy_to) -> None:
    p = proxy_to()
    a = _client(p.port)
    assert a.ping()
    p.cut("refuse")
    with pytest.raises(redis.ConnectionError):
        a.ping()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", p.port), timeout=1.0)
    p.restore()
    assert a.ping()
    assert redis_server.client().ping()


def test_proxy_to_a_stopped_server_resets_the_client(redis_server) -> None:
    with TcpProxy(redis_server.port) as p:
        assert _client(p.port).ping()
        redis_server.stop()
        with pytest.raises(redis.ConnectionError):
            _client(p.port).ping()


def test_replies_cut_lets_requests_through_and_loses_the_answers(redis_server, proxy_to) -> None:
    p = proxy_to()
    a = _client(p.port)
    assert a.ping()
    p.cut("replies")
    with pytest.raises(redis.TimeoutError):
        a.set("done-but-unanswered", b"1")
    assert redis_server.client().get("done-but-unanswered") == b"1", "the request must have reached the server"
    p.restore()
    assert _client(p.port).get("done-but-unanswered") == b"1"
