"""A TCP proxy in front of the API, for the client's tests of connections lost at the worst moment."""
from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable


class Proxy:
    """A TCP proxy on a free loopback port in front of the API at ``upstream_port``: each
    connection it accepts goes to ``_handle(conn, index)`` on a thread of its own (index 0 first)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port, self.seen = upstream_port, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            index, self.seen = self.seen, self.seen + 1
            threading.Thread(target=self._handle, args=(conn, index), daemon=True).start()

    def _handle(self, conn: socket.socket, index: int) -> None:
        raise NotImplementedError


class DroppingProxy(Proxy):
    """A TCP proxy to the API that passes its first request on but hangs up before the answer
    comes back (a connection lost at the worst moment), calling ``on_drop`` just before it does,
    and forwards every later one. A connection the API refuses (it is down) is hung up on."""

    def __init__(self, upstream_port: int, on_drop: Callable[[], None] | None = None) -> None:
        self.on_drop = on_drop
        super().__init__(upstream_port)

    def _handle(self, conn: socket.socket, index: int) -> None:
        drop = index == 0
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        except OSError:  # the API is down: the client sees its connection cut
            conn.close()
            return
        if drop:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            head, body = request.split(b"\r\n\r\n", 1)
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
            while len(body) < length:
                body += conn.recv(65536)
            upstream.sendall(head + b"\r\n\r\n" + body)
            upstream.recv(65536)  # the API has answered (the job exists): hang up on the client instead
            upstream.close()
            if self.on_drop:
                self.on_drop()
            conn.close()
            return
        for src, dst in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()
