"""Wake-ups over Redis pub/sub: idle workers learn of new work without polling.

The add and redrive scripts PUBLISH on the store's channel inside the same
script as the write, so a wake-up announces work that is already stored. One
listener thread per process holds the SUBSCRIBE connection and turns each
message into a LocalNotifier notification, which every waiting thread of the
process sees. If the connection breaks, the listener reconnects (backing off
while the server is down) and, once subscribed again, reports a wake-up
(messages sent meanwhile are lost and work may be waiting). Nothing
here is needed for correctness: a worker's fallback poll still finds the work.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from chalicelib import logs
from chalicelib.storage.notify import LocalNotifier

log = logging.getLogger("spool.redis")

RECONNECT_PAUSE = 0.5
RECONNECT_MAX = 5.0  # the worker's own longest back-off


class RedisNotifier:
    def __init__(self, client: Any, channel: str) -> None:
        self._client = client
        self._channel = channel
        self._local = LocalNotifier()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pubsub: Any = None
        self._closed = threading.Event()
        self.subscribed = False  # the server confirmed the current subscription

    def notify(self) -> None:
        import redis

        try:
            self._client.publish(self._channel, "")
        except redis.RedisError as exc:
            log.debug("PUBLISH failed: %s", exc)

    def _subscribe(self) -> Any:
        pubsub = self._client.pubsub()
        pubsub.subscribe(self._channel)
        # Read the confirmation: from here on, no message on the channel is missed.
        self.subscribed = False
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
            if message is not None and message.get("type") == "subscribe":
                self.subscribed = True
                break
        return pubsub

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed.is_set():
                return
            try:
                self._pubsub = self._subscribe()
            except Exception as exc:  # the listener retries; waiting must never raise
                log.warning("SUBSCRIBE failed (%s); will retry", exc)
                self._pubsub = None
            # The process's, for as long as it runs: no one invocation's (chalicelib/logs.py).
            self._thread = logs.outside_thread(self._listen, name="spool-redis-wake")
            self._thread.start()

    def _listen(self) -> None:
        pause = 0.0  # > 0 while the server cannot be reached
        while not self._closed.is_set():
            pubsub = self._pubsub
            try:
                if pubsub is None:
                    pubsub = self._pubsub = self._subscribe()
                    if pause:
                        log.warning("pub/sub connection restored")
                    pause = 0.0
                    self._local.notify()  # messages may have been missed meanwhile
                message = pubsub.get_message(timeout=0.25)
                if message is not None and message.get("type") == "message":
                    self._local.notify()
            except Exception as exc:
                if self._closed.is_set():
                    return
                # Said once per outage. No wake-up for a failure: a waiting worker
                # would retry the store at once, defeating its own back-off; the
                # wake-up comes when the subscription is back.
                if not pause:
                    log.warning("pub/sub connection lost (%s); will reconnect", exc)
                self._drop()
                pause = min(RECONNECT_MAX, pause * 2 or RECONNECT_PAUSE)
                self._closed.wait(pause)

    def _drop(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to release
                pubsub.close()

    def wait(self, timeout: float) -> bool:
        self._start()
        return self._local.wait(timeout)

    def interrupt(self) -> None:
        """Wake this process's waiters now (Worker.stop)."""
        self._local.interrupt()

    def close(self) -> None:
        self._closed.set()
        self._local.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0)
        self._drop()
