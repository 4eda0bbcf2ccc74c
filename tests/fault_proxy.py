"""A TCP forwarder that fails one exchange on purpose, at the moment a test chooses.

Armed with a marker (bytes the client sends: b"POST /enqueue", b"COMMIT"), it
either drops the request before the server sees it ("before"), or forwards it
and drops the server's first reply ("after": the server did the work, the
client never hears). Either way a hook runs at that instant (kill -9 the
server, say) and the connection is closed under the client, as a crash would.
The upstream port can be changed while it runs, so a restarted server on a new
port is reached through the same address. `losing_replies` keeps the "after" fault
armed for a block: every request carrying the marker is applied and its answer lost,
a client's own resends too (botocore's retries).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass
class _Fault:
    marker: bytes
    when: str  # "before" | "after"
    hook: Callable[[], None]


class FaultProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._fault: _Fault | None = None
        self._losing = False
        self.fired = threading.Event()
        self.accepted = 0  # connections accepted so far (one client's pool reuses one)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def arm(self, marker: bytes, when: str, hook: Callable[[], None] = lambda: None) -> None:
        assert when in ("before", "after")
        self.fired.clear()
        self._fault = _Fault(marker, when, hook)

    def lose_replies(self, marker: bytes) -> list[int]:
        """From now until `disarm`, forward each request carrying `marker` and drop its
        reply; returns a one-item list counting the replies dropped."""
        lost = [0]

        def again() -> None:
            with self._lock:  # not armed again once disarm has run
                lost[0] += 1
                if self._losing:
                    self._fault = _Fault(marker, "after", again)

        with self._lock:
            self._losing = True
        self.arm(marker, "after", again)
        return lost

    @contextlib.contextmanager
    def losing_replies(self, marker: bytes) -> Iterator[list[int]]:
        """`lose_replies` for the block."""
        try:
            yield self.lose_replies(marker)
        finally:
            self.disarm()

    def disarm(self) -> None:
        """No fault from now on: `losing_replies` stops arming itself again."""
        with self._lock:
            self._losing = False
            self._fault = None

    def _take(self, data: bytes) -> _Fault | None:
        """The armed fault if this chunk trips it (once only)."""
        with self._lock:
            fault = self._fault
            if fault is not None and fault.marker in data:
                self._fault = None
                return fault
        return None

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=3)
        except OSError:  # the server is down: as its closed port would, refuse
            _close(client)
            return
        tripped: _Fault | None = None
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([client, upstream], [], [], 0.2)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        fault = self._take(data)
                        if fault is not None and fault.when == "before":
                            fault.hook()
                            self.fired.set()
                            return
                        tripped = tripped or fault
                        upstream.sendall(data)
                    else:
                        if tripped is not None:  # the reply to the marked request
                            tripped.hook()
                            self.fired.set()
                            return
                        client.sendall(data)
        except OSError:
            return
        finally:
            _close(client)
            _close(upstream)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(timeout=2)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
