"""A TCP forwarder in front of Postgres whose plug a test can pull.

`cut()` drops every open connection and refuses new ones (each is accepted
and closed at once, as a dead server's port would behave); `swallow()` keeps
every connection open and throws away what either side sends (a server that is
up but frozen: its kernel acknowledges every byte, nothing comes back);
`restore()` lets them through again. `drop_silently()` makes the connections open
now go dead without a word (no FIN, no RST: a NAT or firewall that lost their state,
an address that moved) while new ones pass. It is the network outage a worker or API process sees,
without stopping the shared server.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator


class PgProxy:
    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._up = True
        self._swallowing = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._dead: set[int] = set()  # id() of the client side of pairs dropped silently
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._up:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=3)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([a, b], [], [], 0.2)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if not self._swallowing and id(a) not in self._dead:
                        peers[sock].sendall(data)
        except (OSError, ValueError):  # cut() closed the sockets under us
            return
        finally:
            self._close_pair(a, b)

    def _close_pair(self, a: socket.socket, b: socket.socket) -> None:
        for sock in (a, b):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def cut(self) -> None:
        self._up = False
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            self._close_pair(a, b)

    def swallow(self) -> None:
        self._swallowing = True

    def drop_silently(self) -> None:
        with self._lock:
            self._dead.update(id(a) for a, _ in self._pairs)

    def restore(self) -> None:
        self._up = True
        self._swallowing = False

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self._listener.close()
        self._thread.join(timeout=2)


@contextlib.contextmanager
def pg_proxy() -> Iterator[PgProxy]:
    proxy = PgProxy()
    try:
        yield proxy
    finally:
        proxy.close()
