"""How long a /health takes when the server is at its connection cap with clients
waiting in the listen backlog (local/http_guard.py's eviction at the cap).

    spool serve --port P &        # SPOOL_API_KEYS set, or laptop mode
    python -m bench.full_server --port P --held 10300

Opens `--held` connections that each send half a request head and then nothing
(past the default cap of 10,000 the rest wait in the backlog), then times three
/health requests on new connections. Needs an open-file limit above `--held`.
"""

from __future__ import annotations

import argparse
import resource
import socket
import time

HALF_HEAD = b"GET /health HTTP/1.1\r\nHost: x\r\nX-A"
HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def timed_health(port: int) -> tuple[float, bytes]:
    """Seconds from connecting to the first bytes of the answer, and its status line."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(HEALTH)
        first = sock.recv(64)
    return time.monotonic() - started, first.split(b"\r\n", 1)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--held", type=int, default=10_300)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    held: list[socket.socket] = []
    try:
        for _ in range(args.held):
            sock = socket.create_connection(("127.0.0.1", args.port), timeout=10)
            sock.sendall(HALF_HEAD)
            held.append(sock)
        time.sleep(2)
        for _ in range(3):
            seconds, status = timed_health(args.port)
            print(f"held {args.held}: /health {seconds:.3f} s ({status.decode()})")
    finally:
        for sock in held:
            sock.close()


if __name__ == "__main__":
    main()
