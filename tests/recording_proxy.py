"""A stand-in HTTP proxy on loopback: what was sent to it, answered 502.

For the tests that a call to a server on this machine's loopback never goes to the
proxy HTTP_PROXY or ALL_PROXY names (spool_client/direct.py, chalicelib/aws_proxies.py).
"""

from __future__ import annotations

import socket
import threading


class Proxy:
    """A listener on loopback that records each request sent to it and answers 502."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.seen: list[bytes] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    self.seen.append(conn.recv(65536))
                except OSError:
                    continue
                conn.sendall(
                    b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.sock.close()
