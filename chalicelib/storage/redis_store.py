"""Redis: the store for teams that already run it.

`SPOOL_STORE_URL=redis://[:password@]host:6379/0?prefix=spool&pool_max=50`
(`rediss://` for TLS). Options Spool reads from the URL, the rest go to
redis-py: `prefix` (every key starts with `{prefix}:`; several deployments can
share one database under different prefixes), `pool_max` (connections per
process), `timeout` (seconds a command may take before StoreUnavailable).
The database number is the URL's path.

How it keeps the JobStore contract: every transition is one Lua script
(chalicelib/storage/redis_lua.py, loaded once and called by EVALSHA), so the
job, its indexes, counters, attempt record and wake-up change together. Times
come from the injected clock and cross as integer microseconds. Every key of a
store shares one Cluster hash tag (`{prefix}`), so each script touches one
slot. Durability is the server's: see docs/self-hosting.md. A claim under a
ClaimPolicy (limits, fair turns) is one script too: see redis_limits.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

from chalicelib import worker_id
from chalicelib.clock import Clock, SystemClock, from_epoch
from chalicelib.errors import InvalidTransition, JobNotFound, StoreUnavailable, UncertainWrite
from chalicelib.ids import new_lease_token
from chalicelib.limits import ClaimPolicy
from chalicelib.models import (
    OTHER_QUEUE,
    STATE_BY_VALUE,
    AddResult,
    Attempt,
    Completion,
    CounterKey,
    Job,
    JobPage,
    JobQuery,
    JobState,
    MinuteTally,
    NewJob,
    WorkerBeat,
    queued_job,
    trusted_job,
)
from chalicelib.redact import redact_text, redact_url
from chalicelib.redrive_attempts import RedriveAttempts
from chalicelib.storage import (
    history,
    redis_limits,
    redis_limits_lua,
    redis_lua,
    refuse_repeated,
    stored_rows,
)
from chalicelib.storage.base import (
    LEASE_EXPIRED_ERROR,
    MINUTES_KEPT,
    Backlog,
    BacklogFull,
    StoreUnreachable,
    check_limit,
    decode_cursor,
    encode_cursor,
    epoch_after_emptyings,
    from_micros,
    log_buried_by_reap,
    minute_of,
    to_micros,
    waiting_in,
)
from chalicelib.storage.queue_totals import QueueTotals, kept
from chalicelib.storage.redis_notify import RedisNotifier
from chalicelib.storage.redis_policy import PolicyWatch, warn_if_not_persisted
from chalicelib.storage.store_clock import ServerClock
from chalicelib.storage.stored_rows import stored_json
from chalicelib.store_outage import Quiet
from chalicelib.webhooks import outbox
from chalicelib.webhooks.outbox import Delivery

log = logging.getLogger("spool.redis")

T = TypeVar("T")

_PREFIX = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_SPOOL_OPTIONS = ("prefix", "pool_max", "timeout")
# redis-py options Spool sets from its own (a URL value would silently win).
_SPOOL_SETS = {
    "max_connections": "pool_max",
    "socket_timeout": "timeout",
    "socket_connect_timeout": "timeout",
}
MAX_POOL = 10_000
MAX_TIMEOUT = 3600.0
# Completions per script call: a script blocks the server while it runs, and each
# completion stands on its own, so big batches are split. An add is never split:
# it is all or nothing.
FINISH_CHUNK = 500
REDRIVE_CHUNK = 1000
# Payloads read per round trip after a redrive (REDRIVE leaves them out): up to 256 KiB
# each, and Redis answers one pipeline's commands before it serves another client.
PAYLOAD_CHUNK = 16
LIST_SCAN_BUDGET = 5000  # index entries one list call may scan before yielding
DUE_PAGE = 1000  # queues per read of every queue's oldest due job (oldest_due)
_NOT_NOW = frozenset(
    {"LOADING", "BUSY", "OOM", "READONLY", "MASTERDOWN", "NOREPLICAS", "CLUSTERDOWN", "TRYAGAIN"}
)
_ERRORS = "surrogatepass"  # lone surrogates travel (and come back) exactly
# The most bytes of payload and result `get` takes back through its script (redis_lua
# GET); a larger job is read with a plain HMGET after the script has compared its
# tenant. About where a second round trip (~40 us on a local server) costs what the
# script's copy of the fields through Lua does.
GET_INLINE_BYTES = 16384
# /health's own key (check_writable) lives this long: never more than one, never stale.
HEALTH_KEY_MS = 1000
_WRITE_FIXES = {
    "MISCONF": "it cannot save to its disk: free space on the disk that holds its dir, or "
    "fix that dir's permissions",
    "READONLY": "it is a read-only replica: point SPOOL_STORE_URL at the primary",
    "NOREPLICAS": "fewer replicas are connected than its min-replicas-to-write asks: "
    "reconnect them, or lower min-replicas-to-write",
    "OOM": "it is out of memory: raise its maxmemory, or free room with `spool purge`",
}


# Write refusals that last until the server's role or its replicas change, as the
# HTTP answer words them.
_KEPT_REFUSALS = {
    "READONLY": "takes no writes now (it is a read-only replica)",
    "NOREPLICAS": "takes no writes now (fewer replicas are connected than it requires)",
}


def write_refusal(exc: redis.ResponseError) -> str:
    """/health's message for a write Redis refused: what to fix, no hosts or paths."""
    if isinstance(exc, redis.exceptions.ReadOnlyError):  # redis-py strips these words
        word = "READONLY"
    elif isinstance(exc, redis.exceptions.OutOfMemoryError):
        word = "OOM"
    else:
        word = str(exc).split(" ", 1)[0]
    fix = _WRITE_FIXES.get(word, f"it answered {word[:20]!r}: see the Redis server's log")
    return f"the job store (Redis) refuses writes: {fix}"


@dataclass(frozen=True)
class RedisSettings:
    url: str  # what redis-py connects to (Spool's options removed)
    prefix: str = "spool"
    pool_max: int = 50
    timeout: float = 5.0
    given: str = ""  # as configured, for messages (always shown through redact_url)

    @property
    def keys(self) -> str:
        """The start of every key: the prefix as a Cluster hash tag."""
        return "{" + self.prefix + "}:"


def parse_url(url: str) -> RedisSettings:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"not a Redis URL: {redact_url(url)!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    names = [k for k, _ in query]
    refuse_repeated(names)
    for name, instead in _SPOOL_SETS.items():
        if name in names:
            raise ValueError(f"Spool sets {name} itself: use {instead} instead")
    ours = {k: v for k, v in query if k in _SPOOL_OPTIONS}
    rest = [(k, v) for k, v in query if k not in _SPOOL_OPTIONS]
    prefix = ours.get("prefix", "spool")
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(
            f"prefix must be 1-64 letters, digits, '_', '.', ':' or '-', not {prefix!r}"
        )
    path = parts.path.strip("/")
    if path and not (path.isascii() and path.isdigit()):
        raise ValueError(f"the URL's path is the database number, not {path!r}")
    pool_max = _number(ours, "pool_max", int, 50, MAX_POOL)
    timeout = _number(ours, "timeout", float, 5.0, MAX_TIMEOUT)
    plain = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), ""))
    _check_redis_options(plain)
    return RedisSettings(plain, prefix, pool_max, timeout, url)


def _number(options: dict[str, str], name: str, kind: type, default: float, most: float) -> Any:
    """One of Spool's numeric options: above 0 and at most `most` (a huge pool or
    timeout is a typo, and redis-py would try to honour it)."""
    raw = options.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not 0 < value <= most:  # also refuses NaN and infinity
        what = "a whole number" if kind is int else "a number of seconds"
        raise ValueError(f"{name} must be {what} above 0 and at most {most:g}, not {raw!r}")
    return value


def _check_redis_options(plain: str) -> None:
    """Refuse options redis-py does not know here, at start-up, rather than with a
    TypeError on the first connection. Builds a connection object; connects nothing."""
    try:
        pool = redis.ConnectionPool.from_url(plain)
        pool.connection_class(**pool.connection_kwargs)
    except TypeError as exc:
        found = re.search(r"argument '([^']+)'", str(exc))
        name = found.group(1) if found else str(exc)
        raise ValueError(
            f"unknown option {name!r}{_did_you_mean(name)}: Spool reads "
            f"{', '.join(_SPOOL_OPTIONS)} and passes redis-py's connection options on "
            "(ssl_* only with rediss://)"
        ) from None
    except redis.RedisError as exc:  # a value redis-py refuses (protocol=9)
        raise ValueError(str(exc)) from None


def _did_you_mean(name: str) -> str:
    """The nearest option Spool or redis-py reads from a URL, when `name` looks like its typo."""
    from difflib import get_close_matches

    from redis.connection import URL_QUERY_ARGUMENT_PARSERS

    close = get_close_matches(name, [*_SPOOL_OPTIONS, *URL_QUERY_ARGUMENT_PARSERS], 1, 0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _text(value: bytes) -> str:
    return value.decode("utf-8", _ERRORS)


def _opt_text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", _ERRORS)


def _opt_micros(value: bytes | None) -> datetime | None:
    return None if value is None else from_micros(int(value))


def _opt(value: str | None) -> str:
    """An optional script argument: '-' for None, '+' and the value otherwise."""
    return "-" if value is None else "+" + value


def row_to_job(row: Sequence[bytes | None]) -> Job:
    """A job from the scripts' HMGET row (redis_lua FIELDS order); our own writes.
    One that no longer reads (a field deleted or edited by hand, a result older than a
    rule) is that job's problem only: a marker for its payload or result, JobUnreadable
    naming the job for the rest (stored_rows)."""
    try:
        return _row_to_job(row)
    except stored_rows.BAD_SHAPE as exc:
        raise stored_rows.damaged(_row_id(row), _numbers_named(row) or exc) from exc


# The fields kept as integers (counts, and times in microseconds since the epoch).
_NUMBERS = (
    "priority", "attempts", "max_attempts", "run_at", "lease_expires_at", "created_at",
    "updated_at", "started_at", "finished_at",
)  # fmt: skip


def _numbers_named(row: Sequence[bytes | None]) -> ValueError | None:
    """What is wrong with a row's numbers, naming the fields (int()'s own message,
    "invalid literal for int() with base 10: b'soon'", named none)."""
    wrong = []
    for name in _NUMBERS:
        value = row[_FIELDS.index(name)]
        if value is not None and not value.strip().lstrip(b"-").isdigit():
            wrong.append(f"{name} is {value[:20].decode('utf-8', 'replace')!r}")
    return ValueError(f"not a number: {', '.join(wrong)}") if wrong else None


def _row_id(row: Sequence[bytes | None]) -> str:
    try:
        return _text(row[0] or b"?")
    except stored_rows.BAD_SHAPE:
        return "?"


def _claimed(row: Sequence[bytes | None]) -> stored_rows.Unrunnable:
    """What a finish needs of a claimed row: fields the claim itself wrote."""
    token, attempts, started = row[10], row[7], row[17]
    assert token is not None and attempts is not None and started is not None
    return stored_rows.Unrunnable(
        _row_id(row), _text(token), int(attempts), from_micros(int(started)), ""
    )


def _row_key(row: Sequence[bytes | None]) -> tuple[datetime, str]:
    """A row's place in a listing's order: (created_at, id)."""
    created = row[15]
    assert created is not None and row[0] is not None
    return from_micros(int(created)), _text(row[0])


def _row_to_job(row: Sequence[bytes | None]) -> Job:
    (id_, tenant, type_, queue, priority, payload, state, attempts, max_attempts, run_at,
     token, expires, result, error, key, created, updated, started, finished) = row  # fmt: skip
    if (
        id_ is None or tenant is None or type_ is None or queue is None or priority is None
        or payload is None or state is None or attempts is None or max_attempts is None
        or run_at is None or created is None or updated is None
    ):  # fmt: skip
        gone = [name for name, value in zip(_FIELDS, row, strict=True) if value is None]
        raise KeyError(f"no {', '.join(n for n in gone if n in _REQUIRED)} field in its hash")
    return trusted_job(
        {
            "id": _text(id_),
            "tenant": _text(tenant),
            "type": _text(type_),
            "queue": _text(queue),
            "priority": int(priority),
            "payload": stored_json(_text(id_), "payload", payload),
            "state": stored_rows.state_of(state.decode(), STATE_BY_VALUE),
            "attempts": int(attempts),
            "max_attempts": int(max_attempts),
            "run_at": from_micros(int(run_at)),
            "lease_token": _opt_text(token),
            "lease_expires_at": _opt_micros(expires),
            "result": None if result is None else stored_json(_text(id_), "result", result),
            "last_error": _opt_text(error),
            "idempotency_key": _opt_text(key),
            "created_at": from_micros(int(created)),
            "updated_at": from_micros(int(updated)),
            "started_at": _opt_micros(started),
            "finished_at": _opt_micros(finished),
        }
    )


def row_to_delivery(row: Sequence[bytes | None]) -> Delivery:
    """A delivery from the scripts' HMGET row (redis_lua DFIELDS order)."""
    (id_, job_id, tenant, url, event, state, attempts, next_at, created,
     token, expires, finished, error) = row  # fmt: skip
    assert id_ is not None and job_id is not None and tenant is not None and url is not None
    assert event is not None and state is not None and attempts is not None
    assert created is not None
    return Delivery(
        id=_text(id_),
        job_id=_text(job_id),
        tenant=_text(tenant),
        url=_text(url),
        event=_text(event),
        state=_text(state),
        attempts=int(attempts),
        next_at=_opt_micros(next_at),
        created_at=from_micros(int(created)),
        lease_token=_opt_text(token),
        lease_expires_at=_opt_micros(expires),
        finished_at=_opt_micros(finished),
        last_error=_opt_text(error),
    )


def _split_len(raw: bytes) -> tuple[bytes, bytes]:
    """b"5:hello..." -> (b"hello", b"...")."""
    size, _, rest = raw.partition(b":")
    n = int(size)
    return rest[:n], rest[n:]


class Script:
    """One Lua script, run by EVALSHA, and by EVAL when the server lacks it (NOSCRIPT:
    a restart, a failover, SCRIPT FLUSH); the server then caches it for the next
    EVALSHA. A no-writes script (redis_lua._READ) goes as EVALSHA_RO / EVAL_RO.

    redis-py's Script sent EVALSHA and then SCRIPT LOAD, both of which CLIENT PAUSE
    WRITE holds (a sha the server does not know may be a writing script; a load may
    replicate): during a write pause (FAILOVER, maintenance) the first status read
    after a restart waited out its timeout and answered 503, though the server
    served reads (found by a chaos run, s59). The _RO forms are read-only commands,
    which a write pause lets through."""

    def __init__(self, client: Any, text: str) -> None:
        self.client = client
        self.script = text
        self.sha = hashlib.sha1(text.encode("utf-8")).hexdigest()
        self.read_only = text.startswith(redis_lua.READ_SHEBANG)

    def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        ro = "_RO" if self.read_only else ""
        try:
            return self.client.execute_command(f"EVALSHA{ro}", self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return self.client.execute_command(f"EVAL{ro}", self.script, len(keys), *keys, *args)


def connect(settings: RedisSettings) -> redis.Redis:
    pool = redis.BlockingConnectionPool.from_url(
        settings.url,
        max_connections=settings.pool_max,
        timeout=settings.timeout,
        socket_timeout=settings.timeout,
        socket_connect_timeout=settings.timeout,
        encoding_errors=_ERRORS,
        health_check_interval=30,
        # CLIENT LIST shows whose connections these are (and tests find their own).
        client_name=f"spool:{settings.prefix}",
    )
    return redis.Redis(connection_pool=pool)


# How redis-py words a failure to open a connection (utils.format_error_message, and
# Connection.connect_check_health's timeout): raised before the command was sent.
_CONNECT_FAILED = re.compile(r"(Error( \S+)? connecting to |Timeout connecting to server)")


def never_connected(exc: BaseException) -> bool:
    """True when `exc` is a connection that never opened (refused, unreachable, timed out
    while connecting, no free connection in the pool, a wrong password), so the command
    was never sent and nothing was applied. A write's 503 said "may have been applied"
    for a stopped server too, where nothing could have been (found by a chaos run, s49).
    Anything not known to come before the send keeps that wording: unsure is safe."""
    if isinstance(exc, redis.AuthenticationError):
        return True
    if not isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return False
    text = str(exc)
    return text.startswith("No connection available") or bool(_CONNECT_FAILED.match(text))


def unreachable_message(settings: RedisSettings, exc: BaseException) -> str:
    reason = redact_text(" ".join(str(exc).split()).rstrip(".") or type(exc).__name__)
    return (
        f"cannot reach the Redis store at {redact_url(settings.given or settings.url)}: "
        f"{reason}. Check that redis-server is running and accepts connections on that "
        "host and port, and that the password and database number in SPOOL_STORE_URL "
        "are right."
    )


class RedisStore:
    # Each call takes its own pooled connection, so the worker may write completions
    # while it claims (see Worker._flush_beside).
    concurrent_writes = True

    def __init__(
        self,
        settings: RedisSettings,
        clock: Clock | None = None,
        attempt_history: int | None = None,
        webhook_history: int | None = None,
    ) -> None:
        # The server's clock unless a test brings its own (store_clock.py says why).
        self._server_clock = ServerClock() if clock is None else None
        self.clock: Clock = clock or self._server_clock or SystemClock()
        self.settings = settings
        self.history_limit = attempt_history or history.history_limit()
        self.webhook_history = webhook_history or outbox.kept_finished()
        # Any: redis-py's stubs type replies as bytes | str; with decode_responses off
        # (as here) they are bytes.
        self.client: Any = connect(settings)
        try:
            self.client.ping()
        except redis.RedisError as exc:
            self.client.close()
            raise StoreUnreachable(unreachable_message(settings, exc), retry_after=5) from exc
        self._read_server_clock()
        self._p = settings.keys
        self._scripts = {
            name: Script(self.client, self._script(getattr(redis_lua, name)))
            for name in (
                "ADD", "CLAIM", "FINISH", "START", "EXTEND", "CANCEL", "REDRIVE", "PURGE",
                "DISCARD", "LIST", "NEXT_DUE", "BEAT", "ATTEMPTS", "GET", "CLAIM_WEBHOOKS",
                "FINISH_WEBHOOK", "WEBHOOKS", "QT_INSTALL", "QUEUE_TOTALS",
            )
        }  # fmt: skip
        for name in ("CLAIM_POLICY", "TAKE_TOKENS"):
            self._scripts[name] = Script(self.client, self._script(getattr(redis_limits_lua, name)))
        self.notifier = RedisNotifier(self.client, self._p + "wake")
        self._summaries = False  # QT_INSTALL ran (or found its work done) for this process
        self._quiet = Quiet()  # one warning per run of failed calls (store_outage.Quiet)
        self._policy = PolicyWatch(self.client)  # maxmemory-policy, read again when due
        self._policy.check()
        warn_if_not_persisted(self.client)
        self._birth: bytes | None = None  # the store's birth mark, as this process saw it
        self._emptied = 0  # changes of that mark logged since (cache_epoch reads it)
        self._mark_birth()

    # -- plumbing ------------------------------------------------------------
    def _script(self, text: str) -> str:
        return redis_lua.with_kept(text, self.webhook_history)

    def _read_server_clock(self) -> None:
        """Read the server's TIME into self.clock when it is due (every
        store_clock.REFRESH_SECONDS). A failed read keeps the last one: the call that
        follows meets the fault and says it."""
        server = self._server_clock
        if server is None or not server.due():
            return
        before = server.ticks()
        try:
            reply = self.client.time()
        except redis.RedisError:
            return
        if isinstance(reply, (tuple, list)) and len(reply) == 2:
            seconds, micros = reply
            when = from_epoch(int(seconds)) + timedelta(microseconds=int(micros))
            server.observe(when, before, server.ticks())

    def _call(self, name: str, args: Sequence[Any], read: bool = False) -> Any:
        """Run one script; outages become StoreUnavailable.

        Only reads are retried: a write whose reply was lost may have been applied.
        """
        self._read_server_clock()
        script = self._scripts[name]
        # KEYS[1] routes the call (Cluster) to the slot of every key the script touches.
        return self._run(lambda: script(keys=[self._p + "epoch"], args=[self._p, *args]), read)

    def run_script(self, name: str, args: Sequence[Any]) -> Any:
        """A writing script, for the store's helper modules (redis_limits)."""
        return self._call(name, args)

    def _run(self, fn: Callable[[], T], read: bool = False) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                answer = fn()
                self._quiet.ok()
                return answer
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                # A read meets a refused or reset connection (a restarted server) again
                # once; not a timeout, which has already cost the caller `timeout`: a
                # hung server made each read wait twice that before its 503.
                if read and attempt == 1 and not isinstance(exc, redis.TimeoutError):
                    continue
                log.log(
                    self._quiet.level(),
                    "redis connection failed: %s",
                    redact_text(str(exc).strip()),
                )
                if never_connected(exc):
                    raise StoreUnavailable(
                        "the job store cannot be reached; try again shortly"
                        if read
                        else "the job store cannot be reached, so nothing was applied; "
                        "try again shortly",
                        retry_after=2,
                    ) from exc
                if not read:
                    raise UncertainWrite(
                        "the job store connection failed before it answered", retry_after=2
                    ) from exc
                raise StoreUnavailable(
                    "the job store connection failed; try again shortly", retry_after=2
                ) from exc
            except redis.ResponseError as exc:
                # The server is loading, busy, out of memory, a replica, without its
                # replicas, its cluster down or resharding, or unable to save: it
                # refused the whole script; the caller may retry.
                if isinstance(exc, redis.exceptions.OutOfMemoryError):
                    log.log(
                        self._quiet.level(),
                        "redis is out of memory (%s): raise its maxmemory, or free room "
                        "with `spool purge` or by purging dead letters",
                        exc,
                    )
                    raise StoreUnavailable(
                        "the job store is full; try again later", retry_after=5
                    ) from exc
                if str(exc).startswith("MISCONF"):
                    # Its last snapshot failed (a full or unwritable disk) and it has
                    # stop-writes-on-bgsave-error: every write is refused until a save
                    # succeeds. Was raised as it came: a 500 per enqueue, and the
                    # exception ended `spool worker` at its next beat or claim.
                    log.log(
                        self._quiet.level(),
                        "redis refuses writes because it cannot save to its disk (%s): "
                        "free space on the disk that holds its dir, or fix its dir's "
                        "permissions; writes resume once a save succeeds",
                        exc,
                    )
                    raise StoreUnavailable(
                        "the job store cannot save to its disk; try again later",
                        retry_after=5,
                    ) from exc
                word = (
                    "READONLY"
                    if isinstance(exc, redis.exceptions.ReadOnlyError)  # its word stripped
                    else str(exc).split(" ", 1)[0]
                )
                if word in _KEPT_REFUSALS:
                    # A replica (a failover demoted this server, or the URL names a
                    # replica) or a primary short of its min-replicas-to-write refuses
                    # every write until an operator or a failover changes that. Said as
                    # "busy; try again shortly", which sent clients to retry at once and
                    # told them nothing of what was applied, and the log named no fix.
                    # Redis refuses a script's first write, before any other: nothing
                    # of it was applied.
                    log.log(
                        self._quiet.level(),
                        "redis refuses writes (%s): %s",
                        exc,
                        _WRITE_FIXES[word],
                    )
                    raise StoreUnavailable(
                        f"the job store {_KEPT_REFUSALS[word]}; nothing was applied; "
                        "try again later",
                        retry_after=5,
                    ) from exc
                if word in _NOT_NOW:
                    log.log(self._quiet.level(), "redis is not ready: %s", exc)
                    raise StoreUnavailable(
                        "the job store is busy; try again shortly", retry_after=2
                    ) from exc
                raise

    def _now(self) -> tuple[datetime, str]:
        now = self.clock.now()
        return now, str(to_micros(now))

    @staticmethod
    def _minute(now: datetime) -> str:
        """The throughput minute of `now`, for scripts that may end attempts."""
        return str(to_micros(minute_of(now)))

    @staticmethod
    def _idbase() -> str:
        """24 random hex digits: a script's webhook delivery ids are this and a counter
        (Lua has no good randomness of its own)."""
        return secrets.token_hex(12)

    # -- contract ------------------------------------------------------------
    def add(self, jobs: Sequence[NewJob], cap: Backlog | None = None) -> list[AddResult]:
        """One script for the whole batch: all of it is stored, or none (with a cap,
        the script counts the tenant's waiting jobs before it writes anything)."""
        if not jobs:
            return []
        now, now_s = self._now()
        first_of: dict[tuple[str, str], int] = {}
        dup_of: dict[int, int] = {}
        for i, new in enumerate(jobs):
            if new.idempotency_key is not None:
                key = (new.tenant, new.idempotency_key)
                if key in first_of:
                    dup_of[i] = first_of[key]
                else:
                    first_of[key] = i
        candidates = [i for i in range(len(jobs)) if i not in dup_of]
        results: list[AddResult | None] = [None] * len(jobs)
        run_ats = [to_micros(jobs[i].run_at) for i in candidates]  # as stored, to the us
        rows = [
            [
                new.id, new.tenant, new.type, new.queue, str(int(new.priority)),
                json.dumps(new.payload, separators=(",", ":")), str(int(new.max_attempts)),
                str(run_at), _opt(new.idempotency_key),
                _opt(getattr(new, "callback_url", None)),
            ]
            for new, run_at in zip((jobs[i] for i in candidates), run_ats, strict=True)
        ]  # fmt: skip
        # Raw UTF-8 (not \u escapes): text redis-py could not encode fails here, before
        # the script, as it did when each value was an argument of its own.
        packed = json.dumps(rows, ensure_ascii=False, separators=(",", ":"))
        args: list[Any] = [now_s, packed]
        if cap is not None:
            args += [cap.tenant, str(cap.most), str(cap.more)]
        flags, held = self._call("ADD", args)
        if flags == b"!":
            waiting, fresh = (int(n) for n in held)
            refused = cap.refuses(waiting, fresh) if cap is not None else None
            assert refused is not None, "the script refuses only a capped add"
            raise refused
        holders = iter(held)
        for i, run_at, flag in zip(candidates, run_ats, flags, strict=True):
            if flag == ord("1"):
                results[i] = AddResult(queued_job(jobs[i], from_micros(run_at), now), True)
            else:
                callback_url, *row = next(holders)
                results[i] = AddResult(row_to_job(row), False, _opt_text(callback_url))
        for i, j in dup_of.items():
            first = results[j]
            assert first is not None
            results[i] = first.repeated(jobs[j])
        return [r for r in results if r is not None]

    def _mark_birth(self) -> bytes | None:
        """Set the store's birth mark (`<prefix>born`, a random token) unless it is
        there, and return the one that is. A Redis restarted without persistence, a
        FLUSHDB or a failover to an empty replica drops it with every job: a mark
        other than the one this process saw means the store was emptied under it.
        None when the server refuses the write (full, a replica): asked again later."""
        key = self._p + "born"
        token = secrets.token_hex(8).encode()
        try:
            before = self.client.set(key, token, nx=True, get=True)
        except redis.RedisError:
            return None
        mark = before if isinstance(before, bytes) else token
        if self._birth is None:
            self._birth = mark
        return mark

    def _check_birth(self) -> None:
        """Log, once per emptying, that the store lost every key since this process
        last looked (see _mark_birth). Called by /health and the worker's beat."""
        seen = self._birth
        mark = self._mark_birth()
        if seen is None or mark is None or mark == seen:
            return
        self._birth = mark
        self._emptied += 1
        log.error(
            "the Redis store was emptied since this process last looked (its birth "
            "mark %sborn changed): a restart without persistence, FLUSHDB/FLUSHALL, "
            "or a failover to an empty replica. Every job, result and idempotency "
            "key from before is gone, though clients saw them acknowledged; see "
            "docs/self-hosting.md, 'Durability on Redis'",
            self._p,
        )

    def check_writable(self) -> None:
        """A Redis that answers reads may refuse writes (a failed save: MISCONF; a
        replica; too few replicas for min-replicas-to-write; out of memory): /health
        sets a key of its own that expires at once, and says what to fix."""
        key = self._p + "health"
        try:
            self._run(lambda: self.client.set(key, b"1", px=HEALTH_KEY_MS), read=True)
        except redis.ResponseError as exc:  # one the store does not map: still refused
            raise StoreUnavailable(write_refusal(exc), retry_after=5) from exc
        except StoreUnavailable as exc:
            refused = exc.__cause__
            if isinstance(refused, redis.ResponseError):
                raise StoreUnavailable(write_refusal(refused), retry_after=5) from refused
            raise
        self._check_birth()
        self._policy.check()

    def warnings(self) -> list[str]:
        warning = self._policy.warning
        return [] if warning is None else [warning]

    def get(self, job_id: str, tenant: str | None = None) -> Job | None:
        if tenant is not None:
            # The script compares the tenant: another tenant's job is None, as an unknown
            # id is, and none of its record is sent (or decoded) to learn that.
            row = self._call("GET", [job_id, tenant, GET_INLINE_BYTES], read=True)
            if not row:
                return None
            if row[0] is not None:
                return row_to_job(row)
            # The tenant's own job, too large to pass through the script: read as below.
        row = self._run(lambda: self.client.hmget(self._p + "j:" + job_id, _FIELDS), read=True)
        if row[0] is None or (tenant is not None and row[1] != tenant.encode("utf-8", _ERRORS)):
            return None
        return row_to_job(row)

    def claim(
        self,
        limit: int,
        lease_seconds: float,
        queues: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
        policy: ClaimPolicy | None = None,
        started: bool = True,
    ) -> list[Job]:
        if policy is not None and policy.active:
            return redis_limits.claim(self, limit, lease_seconds, queues, ids, policy, started)
        _, args = self.claim_args(limit, lease_seconds, queues, ids, started)
        claimed, buried = self._call("CLAIM", args)
        return self.claimed_jobs(claimed, buried)

    def claim_args(
        self,
        limit: int,
        lease_seconds: float,
        queues: Sequence[str] | None,
        ids: Sequence[str] | None,
        started: bool = True,
    ) -> tuple[datetime, list[Any]]:
        """The claim's time and CLAIM's arguments (CLAIM_POLICY takes one more)."""
        now, now_s = self._now()
        if (ids is not None and not ids) or (queues is not None and not queues):
            limit = 0  # still reap: a claim always does
        expires = to_micros(now + timedelta(seconds=lease_seconds))
        args: list[Any] = [
            now_s, self._minute(now), self._idbase(), expires, new_lease_token(),
            json.dumps(worker_id.current()),
            json.dumps(LEASE_EXPIRED_ERROR), self.history_limit, max(0, limit),
            "0" if started else "1",
        ]  # fmt: skip
        args += ["*"] if queues is None else ["=", len(queues), *queues]
        args += ["*"] if ids is None else ["=", *ids]
        return now, args

    def claimed_jobs(self, claimed: Sequence[Any], buried: Sequence[Any]) -> list[Job]:
        """The leased jobs of a claim's reply; logs the jobs its reap buried. A claimed
        job no handler may be given (a record in a bad shape, a payload that is not
        JSON) is made dead here, without running (stored_rows), and the others run."""
        for entry in buried:
            if len(entry) == 2:  # {id, 'nameless'}: redis_lua's bury_damaged
                log.warning(
                    "job %s was buried dead unrun: its hash %s lacks its tenant or queue "
                    "field, so the counts kept under that name keep it in its old state "
                    "(none can be named); let `spool purge` delete it, or delete the key",
                    _text(entry[0]), self._p + "j:" + _text(entry[0]),
                )  # fmt: skip
                continue
            job_id, tenant, type_, queue, attempts, max_attempts, worker = entry
            log_buried_by_reap(
                _text(job_id), _text(tenant), _text(type_), _text(queue), int(attempts),
                int(max_attempts), None if worker is None else json.loads(worker),
            )  # fmt: skip
        jobs, bad = stored_rows.runnable(claimed, row_to_job, _claimed)
        if bad:
            stored_rows.bury(self, bad, self.clock.now())
        return jobs

    def take_tokens(self, key: str, rate: float, burst: int, cost: int = 1) -> float:
        return redis_limits.take_tokens(self, key, rate, burst, cost)

    def finish(self, completions: Sequence[Completion]) -> list[bool]:
        if not completions:
            return []
        now, now_s = self._now()
        applied: list[bool] = []
        for start in range(0, len(completions), FINISH_CHUNK):
            args: list[Any] = [now_s, self._minute(now), self._idbase(), self.history_limit]
            for c in completions[start : start + FINISH_CHUNK]:
                result = (
                    json.dumps(c.result, separators=(",", ":"))
                    if c.state is JobState.SUCCEEDED
                    else None
                )
                entry = None if c.attempt is None else history.encode_within(c.attempt)
                retry_at = None if c.retry_at is None else str(to_micros(c.retry_at))
                args += [
                    c.job_id, c.lease_token, c.state.value, _opt(result), _opt(c.error),
                    _opt(retry_at), _opt(entry),
                ]  # fmt: skip
            applied.extend(bool(n) for n in self._call("FINISH", args))
        return applied

    def start(self, leases: Sequence[tuple[str, str]]) -> list[bool]:
        if not leases:
            return []
        _, now_s = self._now()
        marked: list[bool] = []
        for first in range(0, len(leases), FINISH_CHUNK):
            args: list[Any] = [now_s]
            for job_id, token in leases[first : first + FINISH_CHUNK]:
                args += [job_id, token]
            marked.extend(flag == ord("1") for flag in self._call("START", args))
        return marked

    def extend_lease(self, job_id: str, lease_token: str, lease_seconds: float) -> bool:
        return self.extend_leases([(job_id, lease_token)], lease_seconds)[0]

    def extend_leases(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> list[bool]:
        if not leases:
            return []
        now, now_s = self._now()
        expires = to_micros(now + timedelta(seconds=lease_seconds))
        kept: list[bool] = []
        for first in range(0, len(leases), FINISH_CHUNK):
            args: list[Any] = [now_s, expires]
            for job_id, token in leases[first : first + FINISH_CHUNK]:
                args += [job_id, token]
            kept.extend(flag == ord("1") for flag in self._call("EXTEND", args))
        return kept

    def cancel(self, job_id: str, tenant: str | None = None) -> Job:
        # No read before: the script refuses a damaged hash itself, before it writes
        # (a read here fetched another tenant's record before the tenant was compared).
        _, now_s = self._now()
        reply = self._call("CANCEL", [now_s, self._idbase(), job_id, _opt(tenant)])
        if reply[0] == b"ok":
            return row_to_job(reply[1])
        if reply[0] == b"missing":
            raise JobNotFound("job not found", {"id": job_id})
        if reply[0] == b"unreadable":  # damaged since the read above: nothing written
            raise stored_rows.damaged(job_id, ValueError(_text(reply[1])))
        state = reply[1].decode()
        raise InvalidTransition(f"a {state} job cannot be cancelled", {"state": state})

    def list_jobs(self, query: JobQuery) -> JobPage:
        limit = check_limit(query.limit)
        start = "+" if query.newest_first else "-"
        if query.cursor:
            created, last_id = decode_cursor(query.cursor, query.newest_first)
            start = f"({max(0, created):020d}{last_id}"
        index = "c" if query.tenant is None else "ct:" + query.tenant
        direction = "desc" if query.newest_first else "asc"
        filters = [
            _opt(query.state.value if query.state else None),
            _opt(query.queue),
            _opt(query.type),
            _opt(query.tenant),
        ]
        rows: list[Any] = []
        while len(rows) <= limit:
            found, last, exhausted = self._call(
                "LIST",
                [
                    index,
                    direction,
                    start,
                    LIST_SCAN_BUDGET,
                    limit + 1 - len(rows),
                    *filters,
                    "1" if query.bodies else "0",
                ],
                read=True,
            )
            rows.extend(found)
            if exhausted or not last:
                break
            start = "(" + _text(last)
        if not query.bodies:  # the script left the payload out: {} in its place
            rows = [_with_payload(r, b"{}") for r in rows]
        jobs = stored_rows.readable(row_to_job, rows[:limit])  # a damaged record is left out
        end = stored_rows.page_end(rows, jobs, limit, _row_key)
        cursor = None if end is None else encode_cursor(*end, query.newest_first)
        return JobPage(jobs, cursor)

    def redrive(
        self,
        job_ids: Sequence[str],
        tenant: str | None = None,
        cap: Backlog | None = None,
        attempts: RedriveAttempts | None = None,
    ) -> list[Job]:
        if not job_ids:
            return []
        _, now_s = self._now()
        wanted = list(dict.fromkeys(job_ids))
        moved: dict[str, Job] = {}
        # With a cap, the script counts the tenant's waiting jobs and moves what fits.
        most = "*" if cap is None else str(cap.most)
        owner = tenant if cap is None else cap.tenant
        ceiling, above = "*", "{}"
        if attempts is not None:
            ceiling = str(attempts.ceiling)
            above = json.dumps({t: attempts.most(t) for t in attempts.above})
        self._readable_before_write(wanted, owner, (b"dead",))
        for start in range(0, len(wanted), REDRIVE_CHUNK):
            rows = self._call(
                "REDRIVE",
                [now_s, _opt(owner), most, ceiling, above, *wanted[start : start + REDRIVE_CHUNK]],
            )
            if rows and rows[0] == b"?":  # damaged since the read above: nothing written
                raise stored_rows.damaged(_text(rows[1]), ValueError(_text(rows[2])))
            if rows and rows[0] == b"!":
                if moved or cap is None:  # a later chunk found the room gone: done
                    break
                waiting, dead = (int(n) for n in rows[1])
                raise BacklogFull(waiting, dead, cap.most)
            for job in self._with_payloads(rows):
                moved[job.id] = job
        return [moved[i] for i in wanted if i in moved]

    def _readable_before_write(
        self, ids: Sequence[str], tenant: str | None, states: tuple[bytes, ...]
    ) -> None:
        """JobUnreadable, before any write, for the first of `ids` (of `tenant`, in one of
        `states`: those CANCEL or REDRIVE would change) whose record does not read. A
        script cannot be rolled back: CANCEL and REDRIVE, meeting a hash without its
        created_at, failed half-way (the job queued but off the due index, never run),
        and a record they left damaged was refused only once written (500, yet
        changed). Payload and result are not read: they read as a marker, never raise.
        A job deleted between the two reads (a discard or purge racing the redrive) is
        skipped: gone is not damaged, and REDRIVE passes over an id it does not find."""
        slim = [f if f not in ("payload", "result") else "-" for f in _FIELDS]
        for start in range(0, len(ids), REDRIVE_CHUNK):
            chunk = ids[start : start + REDRIVE_CHUNK]

            def read(
                chunk: Sequence[str], fields: Sequence[str]
            ) -> Callable[[], list[list[bytes | None]]]:
                def run() -> list[list[bytes | None]]:
                    with self.client.pipeline(transaction=False) as pipe:
                        for job_id in chunk:
                            pipe.hmget(self._p + "j:" + job_id, fields)
                        return list(pipe.execute())

                return run

            # The owner and state first: another tenant's record is never fetched (its
            # error and history made a 404's time tell its ids, s46), only then the rest.
            mine = [
                job_id
                for job_id, (state, owner) in zip(
                    chunk, self._run(read(chunk, ("state", "tenant")), read=True), strict=True
                )
                if state in states and (tenant is None or owner == tenant.encode("utf-8", _ERRORS))
            ]
            if not mine:
                continue
            for row in self._run(read(mine, slim), read=True):
                if all(value is None for value in row):
                    # Deleted since the first read (discarded, purged): gone, not damaged.
                    # REDRIVE skips it as an id it never found (s62: a 500 job_unreadable).
                    continue
                row_to_job(_with_payload(row, b"{}"))  # JobUnreadable when damaged

    def _with_payloads(self, rows: Sequence[list[bytes | None]]) -> list[Job]:
        """The jobs of REDRIVE's rows, which leave the payload out: read here with HGET,
        a few jobs per round trip, so no one call holds Redis for the payloads of a whole
        chunk (the script read them all: every client waited 110 ms while 100 jobs of
        250 KB were redriven). A payload never changes once stored; a job deleted since
        its redrive (run, dead and discarded in between) answers with {} in its place,
        as a listing without bodies does."""
        jobs: list[Job] = []
        for start in range(0, len(rows), PAYLOAD_CHUNK):
            part = rows[start : start + PAYLOAD_CHUNK]
            keys = [self._p + "j:" + _text(r[0] or b"") for r in part]

            def read(keys: list[str] = keys) -> list[bytes | None]:
                with self.client.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.hget(key, "payload")
                    return list(pipe.execute())

            payloads = self._run(read, read=True)
            for row, payload in zip(part, payloads, strict=True):
                jobs.append(row_to_job(_with_payload(row, payload or b"{}")))
        return jobs

    def counts(self) -> dict[tuple[str, JobState], int]:
        return self._state_counts(None)

    def counters(self) -> dict[CounterKey, int]:
        raw = self._run(lambda: self.client.hgetall(self._p + "counters"), read=True)
        out: dict[CounterKey, int] = {}
        for field, n in raw.items():
            queue, rest = _split_len(field)
            type_, event = _split_len(rest)
            out[CounterKey(_text(queue), _text(type_), event.decode())] = int(n)
        return out

    def _ensure_summaries(self) -> None:
        """The scrape's summaries (qv, ctot, qc, st, qd, qdt:: redis_lua.QT_INSTALL) built once
        per keyspace from the full hashes, for a keyspace an older Spool wrote; then one
        EXISTS per process, and every script keeps them."""
        if not self._summaries:
            # Its own bookkeeping, done once and idempotent (a keyspace already built
            # answers at once): failing, it is a read's failure, retried once as reads
            # are. As a write, a /metrics scrape or `spool top` during a Redis `CLIENT
            # PAUSE ... WRITE` was told "this change may have been applied" (stop 60).
            self._call("QT_INSTALL", [], read=True)
            self._summaries = True

    def queue_totals(self, keep: Sequence[str], busiest: int) -> QueueTotals:
        """One read script (QUEUE_TOTALS): the ranking off the qv sorted set, the named
        queues' fields and the totals, kept by every script that bumps a counter or a
        count, so the work is the named queues, not every name ever used."""
        self._ensure_summaries()
        always = kept(keep)
        named, own, ctot, own_counts, st = self._call(
            "QUEUE_TOTALS", [max(0, busiest), *always], read=True
        )
        counters: dict[CounterKey, int] = {}
        rest: dict[bytes, int] = {ctot[i]: int(ctot[i + 1]) for i in range(0, len(ctot), 2)}
        for i in range(0, len(own), 3):
            field, n = own[i + 1], int(own[i + 2])
            type_, event = _split_len(field)
            counters[CounterKey(_text(own[i]), _text(type_), event.decode())] = n
            rest[field] = rest.get(field, 0) - n
        other = False
        for field, n in rest.items():
            if n > 0:
                type_, event = _split_len(field)
                counters[CounterKey(OTHER_QUEUE, _text(type_), event.decode())] = n
                other = True
        counts: dict[tuple[str, JobState], int] = {}
        states: dict[bytes, int] = {st[i]: int(st[i + 1]) for i in range(0, len(st), 2)}
        for i in range(0, len(own_counts), 3):
            state, n = own_counts[i + 1], int(own_counts[i + 2])
            if n > 0:
                counts[(_text(own_counts[i]), STATE_BY_VALUE[state.decode()])] = n
            states[state] = states.get(state, 0) - n
        for state, n in states.items():
            if n > 0:
                counts[(OTHER_QUEUE, STATE_BY_VALUE[state.decode()])] = n
                other = True
        return QueueTotals(frozenset(_text(q) for q in named), counters, counts, other)

    def next_due_at(self, queues: Sequence[str] | None = None) -> datetime | None:
        if queues is not None and not queues:
            return None
        args = ["*"] if queues is None else ["=", *queues]
        waiting, lease = self._call("NEXT_DUE", args, read=True)
        present = [from_micros(int(float(t))) for t in (waiting, lease) if t is not None]
        return min(present) if present else None

    def purge(self, finished_before: datetime, limit: int = 1000) -> int:
        total = 0
        stale = to_micros(minute_of(self.clock.now()) - MINUTES_KEPT)
        while total < limit:
            batch = min(1000, limit - total)
            n = int(self._call("PURGE", [to_micros(finished_before), batch, stale]))
            total += n
            if n < batch:
                break
        return total

    def cache_epoch(self, tenant: str) -> int:
        """The tenant's epoch; negative once the store's birth mark is not the one this
        process first saw. An emptied store (a restart without persistence,
        FLUSHDB) reads a never-touched tenant's epoch as 0 again, what the caches saw
        before: they kept serving finished jobs the store had lost, for their whole TTL
        (found by a chaos run, s48). Both keys in one round trip."""

        def read() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.hget(self._p + "te", tenant)
            pipe.get(self._p + "born")
            return list(pipe.execute())

        value, born = self._run(read, read=True)
        epoch = int(value or 0)
        seen = self._birth
        # Emptyings this process knows of: those /health or a beat logged (they take
        # the new mark as seen) and one not yet noticed. Distinct for each (count, epoch).
        emptied = self._emptied + (0 if seen is None or born == seen else 1)
        return epoch_after_emptyings(epoch, emptied)

    def attempts(self, job_id: str, tenant: str | None = None) -> list[Attempt] | None:
        owner, entries = self._call("ATTEMPTS", [job_id, _opt(tenant)], read=True)
        if owner is None:  # no such job, or another tenant's (compared in the script)
            return None
        try:
            return history.decode_all([_text(e) for e in entries], self.history_limit)
        except (*stored_rows.BAD_SHAPE, RecursionError) as exc:  # a log edited by hand
            raise stored_rows.damaged(job_id, exc) from exc

    def oldest_due(
        self, queues: Sequence[str] | None = None, tenant: str | None = None
    ) -> dict[str, datetime]:
        """From qd (or the tenant's qdt:), each queue's oldest waiting run_at, kept by the
        scripts: named queues are one ZMSCORE, every queue one range of the due ones.
        No script walks the queues (a tenant can make any number), so Redis is never
        held by this read for more than one command."""
        if queues is not None and not queues:
            return {}
        self._ensure_summaries()
        key = self._p + ("qd" if tenant is None else "qdt:" + tenant)
        now = to_micros(self.clock.now())
        if queues is None:
            return self._due_pages(key, now)
        names = list(dict.fromkeys(queues))
        scores = self._run(lambda: self.client.zmscore(key, names), read=True)
        return {
            q: from_micros(int(at))
            for q, at in zip(names, scores, strict=True)
            if at is not None and at <= now
        }

    def _due_pages(self, key: str, now: int) -> dict[str, datetime]:
        """Every queue of a qd set whose oldest waiting job is due, a page of DUE_PAGE at
        a time by rank (the due ones come first): each command O(log N + page), so a set
        of any size never holds the server for long. Pages are separate reads: a queue
        whose entry moves meanwhile may show its old or its new oldest job."""
        out: dict[str, datetime] = {}
        start = 0
        while True:
            page = self._run(
                lambda first=start: self.client.zrange(  # type: ignore[misc]
                    key, first, first + DUE_PAGE - 1, withscores=True
                ),
                read=True,
            )
            for queue, at in page:
                if at > now:
                    return out
                out[_text(queue)] = from_micros(int(at))
            if len(page) < DUE_PAGE:
                return out
            start += DUE_PAGE

    def oldest_due_named(self, named: Sequence[str]) -> dict[str, datetime]:
        """What a scrape needs of oldest_due(): the `named` queues' entries, and of every
        other queue only the one whose due job is oldest (its age is `_other`'s, the
        oldest of the queues folded there). Two commands, bounded by len(named), however
        many queues hold due jobs: oldest_due() answers one entry per such queue."""
        self._ensure_summaries()
        key = self._p + "qd"
        names = list(dict.fromkeys(named))
        now = to_micros(self.clock.now())

        def read() -> list[Any]:
            with self.client.pipeline(transaction=True) as pipe:
                if names:
                    pipe.zmscore(key, names)
                # The oldest len(names) + 1 due: at least one is not named, if any is.
                pipe.zrangebyscore(key, "-inf", now, start=0, num=len(names) + 1, withscores=True)
                return list(pipe.execute())

        *scores, first = self._run(read, read=True)
        out = {
            q: from_micros(int(at))
            for q, at in zip(names, scores[0] if scores else [], strict=True)
            if at is not None and at <= now
        }
        wanted = set(names)
        for queue, at in first:
            name = _text(queue)
            if name not in wanted:
                out[name] = from_micros(int(at))
                break
        return out

    # -- the dashboard's reads (see base.py) -----------------------------------
    def state_counts(self, tenant: str | None = None) -> dict[tuple[str, JobState], int]:
        return self._state_counts(tenant)

    def waiting_count(self, tenant: str) -> int:
        return waiting_in(self.state_counts(tenant))

    def _state_counts(self, tenant: str | None) -> dict[tuple[str, JobState], int]:
        """Jobs per (queue, state), of one tenant (its own hash: the cost does not grow
        with other tenants' queues) or summed over all of them."""
        out: dict[tuple[str, JobState], int] = {}
        if tenant is not None:
            mine = self._run(lambda: self.client.hgetall(self._p + "tc:" + tenant), read=True)
            for field, n in mine.items():
                queue, state = _split_len(field)
                if int(n) > 0:
                    out[(_text(queue), STATE_BY_VALUE[state.decode()])] = int(n)
            return out
        raw = self._run(lambda: self.client.hgetall(self._p + "tcounts"), read=True)
        for field, n in raw.items():
            _, rest = _split_len(field)
            if int(n) > 0:
                queue, state = _split_len(rest)
                key = (_text(queue), STATE_BY_VALUE[state.decode()])
                out[key] = out.get(key, 0) + int(n)
        return out

    def throughput(self, since: datetime, tenant: str | None = None) -> list[MinuteTally]:
        """Every tenant's from tp:<minute>; one tenant's from its own tt:<minute>:<tenant>,
        so another tenant's queues never grow its read. A minute with no tn: set was
        written before those were kept: read from tp:, filtered, as it was then."""
        start = to_micros(minute_of(since))

        def read() -> list[tuple[bytes, dict[bytes, bytes], bool]]:
            minutes = self.client.zrangebyscore(self._p + "tpm", start, "+inf")
            if tenant is None:
                pipe = self.client.pipeline(transaction=False)
                for minute in minutes:
                    pipe.hgetall(self._p + "tp:" + _text(minute))
                return [(m, f, False) for m, f in zip(minutes, pipe.execute(), strict=True)]
            pipe = self.client.pipeline(transaction=False)
            for minute in minutes:
                pipe.exists(self._p + "tn:" + _text(minute))
                pipe.hgetall(self._p + "tt:" + _text(minute) + ":" + tenant)
            replies = pipe.execute()
            out = []
            for i, minute in enumerate(minutes):
                kept, own = replies[2 * i], replies[2 * i + 1]
                if kept:
                    out.append((minute, own, True))
                else:
                    out.append(
                        (minute, self.client.hgetall(self._p + "tp:" + _text(minute)), False)
                    )
            return out

        wanted = None if tenant is None else tenant.encode("utf-8", _ERRORS)
        totals: dict[tuple[datetime, str], list[int]] = {}
        for minute, fields, own in self._run(read, read=True):
            when = from_micros(int(minute))
            for field, n in fields.items():
                rest = field
                if not own:
                    owner, rest = _split_len(field)
                    if wanted is not None and owner != wanted:
                        continue
                queue, which = _split_len(rest)
                tally = totals.setdefault((when, _text(queue)), [0, 0])
                tally[0 if which == b"s" else 1] += int(n)
        return [
            MinuteTally(queue, minute, ok, failed)
            for (minute, queue), (ok, failed) in sorted(totals.items())
            if ok or failed
        ]

    def get_by_key(self, tenant: str, idempotency_key: str) -> Job | None:
        field = f"{len(tenant.encode('utf-8', _ERRORS))}:{tenant}{idempotency_key}"
        job_id = self._run(lambda: self.client.hget(self._p + "idem", field), read=True)
        return None if job_id is None else self.get(_text(job_id), tenant)

    def discard(self, job_ids: Sequence[str], tenant: str | None = None) -> list[str]:
        wanted = list(dict.fromkeys(job_ids))
        gone: list[str] = []
        for start in range(0, len(wanted), REDRIVE_CHUNK):
            part = wanted[start : start + REDRIVE_CHUNK]
            gone.extend(_text(i) for i in self._call("DISCARD", [_opt(tenant), *part]))
        return gone

    def beat(self, worker: str, queues: Sequence[str] | None, started_at: datetime) -> None:
        now, now_s = self._now()
        cutoff = to_micros(now - timedelta(seconds=history.BEAT_RETENTION_SECONDS))
        record = json.dumps(
            {"q": history.queues_text(queues), "s": to_micros(started_at), "b": to_micros(now)}
        )
        self._call("BEAT", [worker, record, now_s, cutoff])
        self._check_birth()
        self._policy.check()

    def forget_worker(self, worker: str) -> None:
        def forget() -> None:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.zrem(self._p + "wb", worker)
                pipe.hdel(self._p + "wk", worker)
                pipe.execute()

        self._run(forget)

    def live_workers(self, within: float) -> list[WorkerBeat]:
        since = to_micros(self.clock.now() - timedelta(seconds=within))

        def read() -> list[tuple[bytes, bytes | None]]:
            names = self.client.zrangebyscore(self._p + "wb", since, "+inf")
            if not names:
                return []
            return list(zip(names, self.client.hmget(self._p + "wk", names), strict=True))

        beats: list[WorkerBeat] = []
        for name, raw in self._run(read, read=True):
            if raw is None:
                continue
            record = json.loads(raw)
            beats.append(
                WorkerBeat(
                    _text(name),
                    history.queues_of(record["q"]),
                    from_micros(record["s"]),
                    from_micros(record["b"]),
                )
            )
        return sorted(beats, key=lambda b: b.worker)

    # -- the webhook outbox (see base.py) ------------------------------------
    def claim_webhooks(self, limit: int, lease_seconds: float) -> list[Delivery]:
        if limit <= 0:
            return []
        now, now_s = self._now()
        expires = to_micros(now + timedelta(seconds=lease_seconds))
        rows = self._call("CLAIM_WEBHOOKS", [now_s, expires, new_lease_token(), limit])
        return [row_to_delivery(r) for r in rows]

    def finish_webhook(
        self,
        delivery_id: str,
        lease_token: str,
        outcome: str,
        retry_at: datetime | None = None,
        error: str | None = None,
    ) -> bool:
        if outcome not in outbox.OUTCOMES:
            raise ValueError(f"unknown webhook outcome {outcome!r}")
        _, now_s = self._now()
        at = None if retry_at is None else str(to_micros(retry_at))
        args = [now_s, delivery_id, lease_token, outcome, _opt(at), _opt(outbox.short_error(error))]
        return bool(self._call("FINISH_WEBHOOK", args))

    def webhooks(self, job_id: str, tenant: str | None = None) -> list[Delivery]:
        rows = self._call("WEBHOOKS", [job_id, _opt(tenant)], read=True)
        return [row_to_delivery(r) for r in rows]

    def webhook_counts(self) -> dict[str, int]:
        raw = self._run(lambda: self.client.hgetall(self._p + "dc"), read=True)
        return {k.decode(): int(v) for k, v in raw.items() if int(v) > 0}

    def close(self) -> None:
        self.notifier.close()
        self.client.close()
        self.client.connection_pool.disconnect()


_FIELDS = [
    "id", "tenant", "type", "queue", "priority", "payload", "state", "attempts",
    "max_attempts", "run_at", "lease_token", "lease_expires_at", "result", "last_error",
    "idempotency_key", "created_at", "updated_at", "started_at", "finished_at",
]  # fmt: skip


_PAYLOAD = _FIELDS.index("payload")
# The fields every job's hash holds (the rest are None until set).
_REQUIRED = frozenset(
    ["id", "tenant", "type", "queue", "priority", "payload", "state", "attempts",
     "max_attempts", "run_at", "created_at", "updated_at"]
)  # fmt: skip


def _with_payload(row: Sequence[bytes | None], payload: bytes) -> list[bytes | None]:
    """A row read in _FIELDS' order with its payload put in: a script that leaves the
    payload out (LIST without bodies, REDRIVE) answers nil in its place."""
    return [*row[:_PAYLOAD], payload, *row[_PAYLOAD + 1 :]]


def from_url(url: str, clock: Clock | None = None) -> RedisStore:
    # A malformed URL raises ValueError; open_store says which setting it came from.
    return RedisStore(parse_url(url), clock)
