"""A loopback socket that answers every request with the same bytes, whatever they are:
how the client and the webhook tests meet a server that says what no real server would."""

from __future__ import annotations

import socket
import threading


class CannedServer:
    """Reads each request's head, then writes exactly `answer`; one connection at a time.
    `url` ends in `path`; `requests` counts the heads read."""

    def __init__(self, answer: bytes, path: str = "") -> None:
        self.answer = answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}{path}"
        self.requests = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.settimeout(5)
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    self.requests += 1
                    conn.sendall(self.answer)
                except OSError:  # the client left before the whole answer was read
                    pass

    def close(self) -> None:
        self.sock.close()
