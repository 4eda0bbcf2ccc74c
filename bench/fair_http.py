"""How long one tenant's small request waits behind another tenant's flood of slow
ones in `spool serve`'s thread pool (local/fair_queue.py).

    SPOOL_API_KEYS=fair-bench-key-a-0001=a,fair-bench-key-b-0001=b SPOOL_DEMO_HANDLERS=1 \
        spool serve --no-worker --port P &
    python -m bench.fair_http --port P [--jobs 1000] [--flood 200] [--rounds 3]

Enqueues --jobs echo jobs as tenant A (once), then per round: B's GET /jobs?limit=1
alone; then A sends --flood GET /jobs?limit=1000 on as many connections, each sent
whole and the connection closed at once, and B sends its GET /jobs?limit=1 right
after, then A one GET /jobs?limit=1 of its own (behind its flood either way: its
answer marks the flood drained). Prints B's seconds from sending to its whole
answer, alone and behind the flood, A's, and the size of one of A's pages.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import time


def call(port: int, method: str, path: str, key: str, body: bytes | None = None) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        headers = {"X-API-Key": key, "Content-Type": "application/json"}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        if response.status >= 300:
            raise SystemExit(f"{method} {path}: {response.status} {data[:200]!r}")
        return data
    finally:
        conn.close()


def timed(port: int, path: str, key: str) -> float:
    started = time.monotonic()
    call(port, "GET", path, key)
    return time.monotonic() - started


def flood(port: int, count: int, path: str, key: str) -> None:
    """Each request sent whole on its own connection, which is then closed."""
    head = f"GET {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n\r\n".encode()
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(head)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key-a", default="fair-bench-key-a-0001")
    parser.add_argument("--key-b", default="fair-bench-key-b-0001")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--flood", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for start in range(0, args.jobs, 100):
        jobs = [
            {"type": "echo", "payload": {"n": n}} for n in range(start, min(start + 100, args.jobs))
        ]
        call(args.port, "POST", "/enqueue", args.key_a, json.dumps({"jobs": jobs}).encode())
    page = len(call(args.port, "GET", "/jobs?limit=1000", args.key_a))
    print(f"A's page: {page / 1000:.0f} KB; flood: {args.flood} requests")
    alone, behind = [], []
    for _ in range(args.rounds):
        alone.append(timed(args.port, "/jobs?limit=1", args.key_b))
        flood(args.port, args.flood, "/jobs?limit=1000", args.key_a)
        behind.append(timed(args.port, "/jobs?limit=1", args.key_b))
        # A's own next request waits behind A's flood, fair turns or not: its answer
        # says the flood has drained, and how long the flood held the pool.
        tail = timed(args.port, "/jobs?limit=1", args.key_a)
        print(
            f"B alone {alone[-1]:.3f} s, behind A's flood {behind[-1]:.3f} s; A's next {tail:.3f} s"
        )
    print(
        f"median: alone {statistics.median(alone):.3f} s, behind {statistics.median(behind):.3f} s"
    )


if __name__ == "__main__":
    main()
