"""A real TCP proxy the tests can cut: one "node"'s network path to Redis.

The processes of one node talk to ``127.0.0.1:proxy.port``; the proxy relays every byte to
the real server. ``cut()`` partitions that node from the server without touching the others:

* ``mode="blackhole"`` (the default, what a dead switch or a firewall that drops packets
  does): every open connection stays open but nothing is relayed in either direction, and new
  connections are accepted and then left unanswered. A client without socket timeouts hangs.
* ``mode="refuse"`` (what a restarted host or a rejecting firewall does): every open connection
  is reset and the listening socket is closed, so new connections get ECONNREFUSED.
* ``mode="replies"`` (the ambiguous failure): requests still reach the server, its answers are
  lost on the way back. The client cannot tell whether what it asked for was done.

``restore()`` reopens the path: connections held in a blackhole are reset (the bytes dropped
meanwhile made their protocol streams useless, as after a real partition) and new connections
are relayed again.

Threads, not a selector: one per direction per connection, each a blocking ``recv``/
``sendall`` loop, so a slow peer can never stall another connection's relay.
"""

from __future__ import annotations

import socket
import struct
import threading

__all__ = ["TcpProxy"]


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a dropped connection looks to its peer."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _Conn:
    def __init__(self, client: socket.socket, upstream: socket.socket | None) -> None:
        self.client = client
        self.upstream = upstream
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for s in (self.client, self.upstream):
            if s is not None:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                _reset(s)


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1", port: int = 0) -> None:
        self.target = (target_host, target_port)
        self._lock = threading.Lock()
        self._conns: set[_Conn] = set()
        self._mode: str | None = None  # None: relaying; "blackhole" or "refuse": cut
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._stopped = False
        self.accepted = 0  # connections accepted in total (a test can see that clients came)
        self.port = port
        self._listen()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def is_cut(self) -> bool:
        return self._mode is not None

    # ------------------------------------------------------------------ listening
    def _listen(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(128)
        self.port = s.getsockname()[1]
        self._listener = s
        t = threading.Thread(target=self._accept_loop, args=(s,), name=f"tcp-proxy-{self.port}", daemon=True)
        self._accept_thread = t
        t.start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed (refuse, or stop)
            self.accepted += 1
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                mode = self._mode
            if mode == "blackhole":
                conn = _Conn(client, None)
                with self._lock:
                    self._conns.add(conn)
                threading.Thread(target=self._swallow, args=(conn,), daemon=True).start()
                continue
            if mode == "refuse":  # accepted in the instant before the listener closed
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
                upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                _reset(client)  # the server is down: the client sees a reset, as it would directly
                continue
            conn = _Conn(client, upstream)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._pump, args=(conn, client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(conn, upstream, client, True), daemon=True).start()

    # ------------------------------------------------------------------ relaying
    def _pump(self, conn: _Conn, src: socket.socket, dst: socket.socket, is_reply: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                mode = self._mode
                if mode is not None and (mode != "replies" or is_reply):
                    continue  # cut: the bytes are lost on the way (with "replies", only the answers)
                dst.sendall(data)
        except OSError:
            pass
        if self._mode is None or conn.closed:
            self._drop(conn)
        # cut and not closed: leave the other side hanging, as a partition does

    def _swallow(self, conn: _Conn) -> None:
        """A connection made while blackholed: read and drop until reset."""
        try:
            while conn.client.recv(65536):
                pass
        except OSError:
            pass

    def _drop(self, conn: _Conn) -> None:
        with self._lock:
            self._conns.discard(conn)
        conn.close()

    # ------------------------------------------------------------------ control
    def cut(self, mode: str = "blackhole") -> None:
        if mode not in ("blackhole", "refuse", "replies"):
            raise ValueError(f"cut mode {mode!r}: use 'blackhole', 'refuse' or 'replies'")
        with self._lock:
            self._mode = mode
            conns = list(self._conns) if mode == "refuse" else []
            if mode == "refuse":
                self._conns.clear()
        for c in conns:
            c.close()
        if mode == "refuse" and self._listener is not None:
            listener, self._listener = self._listener, None
            self._close_listener(listener)
            if self._accept_thread is not None:
                self._accept_thread.join(5)

    def restore(self) -> None:
        with self._lock:
            mode, self._mode = self._mode, None
            held = list(self._conns) if mode in ("blackhole", "replies") else []
            for c in held:
                self._conns.discard(c)
        for c in held:
            c.close()  # their streams lost bytes: useless; the clients reconnect
        if self._listener is None and not self._stopped:
            self._listen()

    def connections(self) -> int:
        with self._lock:
            return len(self._conns)

    def stop(self) -> None:
        self._stopped = True
        with self._lock:
            conns = list(self._conns)
            self._conns.clear()
        for c in conns:
            c.close()
        if self._listener is not None:
            listener, self._listener = self._listener, None
            self._close_listener(listener)

    @staticmethod
    def _close_listener(listener: socket.socket) -> None:
        # close() alone does not wake a thread blocked in accept() on Linux; shutdown() does
        try:
            listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        listener.close()

    def __enter__(self) -> "TcpProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
