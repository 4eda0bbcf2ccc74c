"""Every SPOOL_* setting as data: name, type, default, who reads it, what it means.

docs/settings.md is generated from this catalog (`python -m chalicelib.settings_catalog
--write`), and tests/test_settings_catalog.py fails when the two drift apart, when the
code mentions a SPOOL_* name the catalog lacks, when an entry is no longer read, or
when a default here disagrees with the code's. So a new setting is documented by
adding one `Setting` below and regenerating the page.

Plain data and the standard library only: nothing on the Lambda path imports this
module, and importing it must stay cheap for the tools that do.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC_PATH = ROOT / "docs" / "settings.md"
WRITE_COMMAND = ".venv/bin/python -m chalicelib.settings_catalog --write"

# Types as an operator writes them in the environment.
TEXT, INTEGER, NUMBER, FLAG, LIST, JSON = "text", "integer", "number", "flag", "list", "JSON"


@dataclass(frozen=True)
class Setting:
    """One SPOOL_* environment variable.

    `default` is the value the code uses when the variable is unset or empty (None:
    unset means "off" or "not used"). `field` names the chalicelib.config.Settings
    attribute it fills, for the settings config.py parses itself; the others are read
    from Settings.extra by the component that needs them.
    """

    name: str
    type: str
    default: object
    read_by: str
    meaning: str
    group: str
    field: str | None = None


GROUPS = (
    "Store and start-up",
    "HTTP API",
    "HTTP server (spool serve)",
    "Worker",
    "AWS",
    "Blob storage",
    "Built-in handler: send_email",
    "Built-in handler: http_request",
    "Built-in handler: resize_image",
    "Webhooks",
)

_STORE, _API, _SERVER, _WORKER, _AWS, _BLOBS, _EMAIL, _HTTP, _IMAGES, _WEBHOOKS = GROUPS

CATALOG: tuple[Setting, ...] = (
    # -- Store and start-up --------------------------------------------------------------
    Setting(
        name="SPOOL_STORE_URL",
        type=TEXT,
        default="sqlite:///.spool/spool.db",
        read_by="chalicelib/runtime.py",
        meaning=(
            "Where jobs live: `sqlite:///PATH` (three slashes before a relative path, four "
            "before an absolute one; one, `sqlite:/PATH`, is refused), `memory://`, "
            "`postgresql://user@host/db?schema=...`, `redis://host:6379/0` (`rediss://` for "
            "TLS) or `dynamodb://TABLE?queue=QUEUE&bucket=BUCKET`."
        ),
        group=_STORE,
        field="store_url",
    ),
    Setting(
        name="SPOOL_HANDLERS",
        type=LIST,
        default=(),
        read_by="chalicelib/runtime.py",
        meaning=(
            "Comma-separated Python modules imported at start-up; importing one registers "
            "its handlers (the built-ins are always there). `spool` also imports from the "
            "working directory."
        ),
        group=_STORE,
        field="handlers",
    ),
    Setting(
        name="SPOOL_DEMO_HANDLERS",
        type=FLAG,
        default=False,
        read_by="chalicelib/config.py",
        meaning=(
            "Offer the demo job types echo, sleep and fail. Off in deployments; on in "
            "`make run`, `spool serve` laptop mode, the `local` Chalice stage and the tests."
        ),
        group=_STORE,
        field="demo_handlers",
    ),
    Setting(
        name="SPOOL_DEBUG",
        type=FLAG,
        default=False,
        read_by="local/cli_errors.py",
        meaning="`spool` prints the full traceback of an unexpected failure, not one line.",
        group=_STORE,
    ),
    Setting(
        name="SPOOL_URL",
        type=TEXT,
        default=None,
        read_by="local/remote_cli.py",
        meaning=(
            "A Spool server for `spool enqueue|status|jobs|cancel|dlq` (as `--url`): set, "
            "they go through the Python client instead of opening the local store. The "
            "client (`spool_client.Client()`) reads it too."
        ),
        group=_STORE,
    ),
    Setting(
        name="SPOOL_API_KEY",
        type=TEXT,
        default=None,
        read_by="local/remote_cli.py",
        meaning=(
            "The API key sent with `SPOOL_URL` (as `--key`); it names the tenant. Read by "
            "`spool_client.Client()` too. Not the server's keys: those are `SPOOL_API_KEYS`."
        ),
        group=_STORE,
    ),
    Setting(
        name="SPOOL_SCHEDULES",
        type=JSON,
        default="",
        read_by="chalicelib/periodic.py",
        meaning=(
            "Periodic jobs as JSON (a list, or an object by name); an entry replaces a code "
            'schedule of the same name, `"enabled": false` switches one off.'
        ),
        group=_STORE,
    ),
    # -- HTTP API ------------------------------------------------------------------------
    Setting(
        name="SPOOL_API_KEYS",
        type=TEXT,
        default="",
        read_by="chalicelib/api/auth.py",
        meaning=(
            "Comma-separated `key=tenant` or `sha256:<hex digest>=tenant` pairs. A plain key "
            'has at least 16 characters (`python -c "import secrets; '
            'print(secrets.token_urlsafe(32))"` makes one). Empty: '
            "every request is refused (`spool serve` then makes a development key), unless "
            "SPOOL_API_KEYS_PARAMETER names where to read them."
        ),
        group=_API,
        field="api_keys",
    ),
    Setting(
        name="SPOOL_API_KEYS_PARAMETER",
        type=TEXT,
        default="",
        read_by="chalicelib/api/key_source.py",
        meaning=(
            "SSM Parameter Store SecureString holding the keys (same format as "
            "SPOOL_API_KEYS), read when SPOOL_API_KEYS is unset; the deployed stages set "
            "`/spool/<stage>/api-keys`."
        ),
        group=_API,
    ),
    Setting(
        name="SPOOL_API_KEYS_TTL",
        type=NUMBER,
        default=60.0,
        read_by="chalicelib/api/key_source.py",
        meaning=(
            "Seconds each process caches the keys read from SSM, so a rotation lands within it "
            "(0 to 3600)."
        ),
        group=_API,
    ),
    Setting(
        name="SPOOL_API_KEYS_REGION",
        type=TEXT,
        default=None,
        read_by="chalicelib/api/key_source.py",
        meaning=(
            "Region of SPOOL_API_KEYS_PARAMETER (empty: the SDK's region); a name the SDK "
            "would refuse (`us_east_1`) stops the start."
        ),
        group=_API,
    ),
    Setting(
        name="SPOOL_HEALTH_CACHE_SECONDS",
        type=NUMBER,
        default=5.0,
        read_by="chalicelib/api/routes.py",
        meaning=(
            "Seconds a successful `/health` store probe is remembered (failures never are): "
            "on DynamoDB each probe is a billed read (0 to 60)."
        ),
        group=_API,
    ),
    Setting(
        name="SPOOL_MAX_BODY_BYTES",
        type=INTEGER,
        default=262_144,
        read_by="chalicelib/api/routes.py",
        meaning=(
            "Largest request body accepted (1024 to 10485760 bytes, API Gateway's own "
            "limit); a bigger one gets 413 and nothing is stored. Whatever it is, one "
            "job's payload may take at most 2 MiB in the answers that return it "
            "(GET /status: escaped as JSON and again by Lambda, so under Lambda's 6 MB "
            "answer), 413 past it. Memory: a body is parsed whole before a job in it is "
            "refused; as Python objects its values take up to about 90 bytes each, so a "
            "body holds at most SPOOL_MAX_BODY_VALUES of them (about 12 MB), and "
            "otherwise takes a few times its size, per request thread at once: with a "
            "limit near 10 MB, size `spool serve --threads` (16) to the memory there is."
        ),
        group=_API,
        field="max_body_bytes",
    ),
    Setting(
        name="SPOOL_MAX_BODY_VALUES",
        type=INTEGER,
        default=131_072,
        read_by="chalicelib/json_values.py",
        meaning=(
            "Most JSON values one `POST /enqueue` body may hold (arrays, objects, and the "
            "elements and members in them; 1024 to 5242880), counted from its bytes "
            "before it is parsed: a bigger count gets 413 with no object built. Parsed, "
            "a small value such as `{}` takes about 30 times its text (a 10 MB body of "
            "them: 280 MB); the default, what the default 256 KiB body can hold at most, "
            "bounds that to about 12 MB whatever SPOOL_MAX_BODY_BYTES allows."
        ),
        group=_API,
    ),
    Setting(
        name="SPOOL_MAX_BATCH",
        type=INTEGER,
        default=100,
        read_by="chalicelib/api/routes.py",
        meaning=(
            'Most jobs in one batch enqueue (`{"jobs": [...]}`, 1 to 10000); a bigger batch '
            "gets 413."
        ),
        group=_API,
        field="max_batch",
    ),
    Setting(
        name="SPOOL_CACHE_SIZE",
        type=INTEGER,
        default=1000,
        read_by="chalicelib/api/routes.py",
        meaning=(
            "Terminal `/status` answers the result cache holds per process for each tenant "
            "(each tenant's least recently used go first; one tenant's reads never evict "
            "another's), 0 to 1000000; 0 turns the cache off."
        ),
        group=_API,
        field="cache_size",
    ),
    Setting(
        name="SPOOL_CACHE_TTL",
        type=NUMBER,
        default=300.0,
        read_by="chalicelib/api/routes.py",
        meaning=(
            "Seconds a cached terminal `/status` answer is served before the store is read "
            "again, 0 to 86400; 0 turns the cache off."
        ),
        group=_API,
        field="cache_ttl",
    ),
    Setting(
        name="SPOOL_METRICS_PUBLIC",
        type=FLAG,
        default=False,
        read_by="chalicelib/api/auth.py",
        meaning=(
            "Serve `/metrics` to anyone, without a key. It shows every tenant's queue names: "
            "only for a scraper on a private network. `spool serve` and `chalice local` on a "
            "loopback address "
            "then answer it only to a Host that is an address or localhost (403 to a "
            "page of another site reaching 127.0.0.1 by DNS rebinding)."
        ),
        group=_API,
        field="metrics_public",
    ),
    Setting(
        name="SPOOL_METRICS_KEYS",
        type=LIST,
        default="",
        read_by="chalicelib/api/auth.py",
        meaning=(
            "Operator keys for `/metrics` (comma-separated `key`, `sha256:<hex>`, either with "
            "an optional `=name`), sent as `X-API-Key` or `Authorization: Bearer`; a plain key "
            "has at least 16 characters. A tenant's "
            "key gets 403. `spool serve` in laptop mode sets it to its dev key."
        ),
        group=_API,
    ),
    Setting(
        name="SPOOL_METRICS_MAX_QUEUES",
        type=INTEGER,
        default=50,
        read_by="chalicelib/api/metric_labels.py",
        meaning=(
            "Most queue names that keep their own metric label when SPOOL_METRICS_QUEUES is "
            "unset (0 to 10000; the busiest, ranked at each scrape, "
            "so every process names the same ones; for "
            "a process's timing histograms the first it ran, at most a fifth per tenant), "
            "besides the handlers' own queues and `default`; the rest are summed into "
            '`queue="_other"`, whose counters fall or jump when the ranking moves (sum '
            "over `queue` for totals). The busiest are ranked across tenants: "
            "one tenant's volume can fold another's small queues into `_other`, so where "
            "tenants share a store and alerts watch named queues, list them in "
            "SPOOL_METRICS_QUEUES or cap tenants with SPOOL_TENANT_LIMITS."
        ),
        group=_API,
    ),
    Setting(
        name="SPOOL_METRICS_QUEUES",
        type=LIST,
        default=None,
        read_by="chalicelib/api/metric_labels.py",
        meaning=(
            "Comma-separated queues that are the only metric labels (every other queue is "
            'summed into `queue="_other"`); unset: the busiest, SPOOL_METRICS_MAX_QUEUES. '
            "Give every process (the API and each worker) the same list: Prometheus takes "
            "one copy of each system-wide series, so processes naming different queues "
            "count the same jobs twice. SPOOL_QUEUES (the queues a worker claims from) "
            "does not change the labels."
        ),
        group=_API,
    ),
    Setting(
        name="SPOOL_METRICS_MAX_WORKERS",
        type=INTEGER,
        default=50,
        read_by="chalicelib/api/metric_labels.py",
        meaning=(
            "Most live workers that get a `spool_worker_last_heartbeat_timestamp_seconds` "
            "series (the most recent beats), 0 to 10000; `spool_workers_live` counts them all."
        ),
        group=_API,
    ),
    Setting(
        name="SPOOL_CACHE_BYTES",
        type=INTEGER,
        default=8 * 1024 * 1024,
        read_by="chalicelib/api/routes.py",
        meaning=(
            "Characters of cached `/status` answers each tenant may hold per process, 0 to "
            "1073741824 (0 turns the cache off): with SPOOL_CACHE_SIZE it bounds the "
            "cache's memory at about this times the number of tenants; an answer larger "
            "than this is never cached."
        ),
        group=_API,
    ),
    Setting(
        name="SPOOL_CACHE_RECHECK",
        type=NUMBER,
        default=1.0,
        read_by="chalicelib/api/routes.py",
        meaning=(
            "Seconds between one process's reads of a tenant's invalidation epoch; a redrive "
            "or purge of a tenant's jobs in any process empties that tenant's share of the "
            "result cache within this time (0 to 60)."
        ),
        group=_API,
    ),
    Setting(
        name="SPOOL_TENANT_LIMITS",
        type=JSON,
        default=None,
        read_by="chalicelib/limit_settings.py",
        meaning=(
            'Enqueue limits per tenant: `{"*": {"rate": "50/s", "burst": 100, "backlog": '
            '100000}, "acme": {"rate": "500/s"}}`. `rate`/`burst` is a token bucket shared by '
            "every API process, which a redrive draws on too, a token a job it moves (one per "
            "id named is taken first, and those of ids not moved given back; over it: 429 "
            "with Retry-After, nothing stored or moved; a batch, or a redrive of named jobs, "
            "larger than the burst: 413, of named jobs counting only the tenant's dead ones; "
            "a bulk redrive moves at most the burst); `backlog` "
            "caps the tenant's waiting jobs, redriven "
            "dead jobs too (429, which spends no token, even when another API process filled "
            "the room after this one counted; a batch, or a redrive of named jobs, larger "
            "than the backlog: "
            "413; a bulk redrive takes what fits; a hard cap across every API process on "
            "SQLite, Postgres and Redis, where the store counts and stores in one atomic "
            "step; on DynamoDB, whose waiting index is eventually consistent, it holds per "
            "API process only, and requests arriving together at several can pass it by "
            "their jobs). An enqueue costs a token for each job it stored, once: one that "
            "stores none of its jobs (a 409, a 413 or 503 from the store, an error) costs "
            "none, and a batch that stores some of them (its keyed jobs before a 409 or "
            "a 503) costs those; after a 503 that says the write may have been applied, "
            "the jobs the store holds are read back and cost their tokens, and the "
            "client's retry with the same idempotency key, answered by the stored job, "
            "costs nothing (when the read fails too, nothing is charged). A job whose "
            "idempotency key "
            "is already stored is a repeat: it spends no token (one sent while its first "
            "request was still being stored through another process gives back the token "
            "it took) and no backlog room, and is "
            "answered even past the limits, also when another process stored it after this "
            "one first looked (a refusal looks again); one whose first request is still "
            "being stored when the limit refuses it is answered 429, and its retry the job. "
            '`"*"` is every tenant without an entry of its own; '
            "an entry for a name no tenant can have (SPOOL_API_KEYS' alphabet) is refused "
            "at start."
        ),
        group=_API,
    ),
    Setting(
        name="SPOOL_AUTH_FAILURES",
        type=TEXT,
        default="20/m",
        read_by="chalicelib/limit_settings.py",
        meaning=(
            "Failed authentications one client address (an IPv6 address: its /64) may make, as "
            "a rate (`20/m`); an IPv6 /48 may make 16 times that and a /32 256 times (a /32 "
            "then has what an IPv4 /24 has), however many /64s the guesses come from, and an "
            "address that carries an IPv4 one (IPv4-mapped, 6to4, Teredo, NAT64) counts as "
            "that IPv4 client, every link-local address as one. Past it that client's keys "
            "are not checked (429) until "
            "Retry-After, except a key that has already signed in from that address, so its "
            "owner keeps access (the 8 keys that signed in from it most lately are remembered)."
            " A valid operator key on a tenant's route is answered 403 and is no failure, nor"
            " is a request with no key at all (401: it guesses nothing, and any web page can"
            " make a browser send one). `off` disables it. Counted per API process, and so"
            " are the keys that signed in: under "
            "`--processes N` an owner behind the guesser's address may get 429 from a process "
            "it has not signed in through, until Retry-After. `spool serve` and `chalice "
            "local` count the connecting address and read no forwarded header: behind a "
            "reverse proxy every client is the proxy's address, so set `off` there and limit "
            "failed sign-ins at the proxy."
        ),
        group=_API,
    ),
    Setting(
        name="SPOOL_MAX_ATTEMPTS",
        type=INTEGER,
        default=25,
        read_by="chalicelib/attempt_ceiling.py",
        meaning=(
            "The most attempts a request may ask one job to have (`max_attempts`, 1-100): "
            "more is 422 naming this ceiling, on `POST /enqueue` (one job or a batch), the "
            "Python client, `spool enqueue` and schedules alike. A handler's own "
            "`max_attempts` above it may still be asked for, and is what a job gets without "
            "asking. Each attempt is worker time: before it, one enqueue could buy 100. A "
            "redrive gives a dead job at most the same (its own `max_attempts` when lower)."
        ),
        group=_API,
    ),
    Setting(
        name="SPOOL_MAX_WAITS_PER_TENANT",
        type=INTEGER,
        default=4,
        read_by="chalicelib/api/routes.py",
        meaning=(
            "Concurrent `GET /status/{id}?wait=` long-polls per tenant per process (429 past it)."
        ),
        group=_API,
    ),
    Setting(
        name="SPOOL_MAX_WAITS",
        type=INTEGER,
        default=8,
        read_by="chalicelib/api/routes.py",
        meaning=(
            "Concurrent long-polls per process, all tenants (429 past it); `spool serve` sets "
            "it to half its threads unless given, and refuses a value that would leave none "
            "of its threads free. When it is full, a tenant holding two "
            "fewer than another ends that tenant's oldest wait (answered at once, as the "
            "job stands) and takes its place."
        ),
        group=_API,
    ),
    # -- HTTP server (spool serve) -------------------------------------------------------
    Setting(
        name="SPOOL_HTTP_MAX_CONNECTIONS",
        type=INTEGER,
        default=10_000,
        read_by="local/http_limits.py",
        meaning=(
            "Open client connections; past it the longest-idle one is closed to admit a new "
            "client (16 to 1000000). Lowered, with a warning, to what the open-file limit allows."
        ),
        group=_SERVER,
    ),
    Setting(
        name="SPOOL_SERVE_HANG_SECONDS",
        type=NUMBER,
        default=20.0,
        read_by="local/multiproc.py",
        meaning=(
            "`spool serve --processes N`: a server process whose loop has not turned for "
            "this long (hung, or stopped with SIGSTOP) is killed and started again, instead "
            "of keeping its share of new connections waiting for ever (1-3600)."
        ),
        group=_SERVER,
    ),
    Setting(
        name="SPOOL_HTTP_IDLE_TIMEOUT",
        type=NUMBER,
        default=60.0,
        read_by="chalicelib/http_timeouts.py",
        meaning=(
            "Seconds a keep-alive connection may sit with no request under way (0.05 to "
            "86400), under `spool serve` and `chalice local`; then it is closed."
        ),
        group=_SERVER,
    ),
    Setting(
        name="SPOOL_HTTP_REQUEST_TIMEOUT",
        type=NUMBER,
        default=30.0,
        read_by="chalicelib/http_timeouts.py",
        meaning=(
            "Seconds from a request's first byte until its head and body have arrived; "
            "slower clients get 408 and are closed (0.05 to 3600), under `spool serve` and "
            "`chalice local`."
        ),
        group=_SERVER,
    ),
    Setting(
        name="SPOOL_HTTP_SEND_TIMEOUT",
        type=NUMBER,
        default=60.0,
        read_by="chalicelib/http_timeouts.py",
        meaning=(
            "Seconds a client has to take a finished response before the connection is closed "
            "(0.05 to 86400), under `spool serve` and `chalice local`."
        ),
        group=_SERVER,
    ),
    Setting(
        name="SPOOL_HTTP_MAX_HEADER_BYTES",
        type=INTEGER,
        default=16_384,
        read_by="chalicelib/api/http.py",
        meaning=(
            "Largest request line plus headers, 1024 to 1048576 bytes (431 past it), under "
            "`spool serve` and `chalice local`."
        ),
        group=_SERVER,
    ),
    Setting(
        name="SPOOL_HTTP_RESERVE_THREADS",
        type=INTEGER,
        default=None,
        read_by="local/http_limits.py",
        meaning=(
            "Threads of `spool serve`'s pool no one tenant may hold, so another tenant's "
            "request starts while one tenant's flood runs; each tenant (all its keys "
            "together) may run at most `--threads` minus this at once, and requests wait "
            "their turn per tenant. Unset: 1 of up to 4 threads, 2 of more, none of 1. "
            "It must leave a tenant at least one thread (refused at start)."
        ),
        group=_SERVER,
    ),
    # -- Worker --------------------------------------------------------------------------
    Setting(
        name="SPOOL_CONCURRENCY",
        type=INTEGER,
        default=8,
        read_by="chalicelib/runtime.py",
        meaning=(
            "Pool threads per worker: jobs one process runs at once, 1 to 1024 (`spool "
            "worker --concurrency` overrides it)."
        ),
        group=_WORKER,
        field="concurrency",
    ),
    Setting(
        name="SPOOL_LEASE_SECONDS",
        type=NUMBER,
        default=60.0,
        read_by="chalicelib/runtime.py",
        meaning=(
            "How long a claim holds a job, 2 to 86400 seconds; the worker extends it while "
            "the job runs (when two thirds are left), and a lease that lapses (a dead worker) lets "
            "another worker retry the job."
        ),
        group=_WORKER,
        field="lease_seconds",
    ),
    Setting(
        name="SPOOL_QUEUES",
        type=LIST,
        default=None,
        read_by="chalicelib/runtime.py",
        meaning="Comma-separated queues this worker claims from (names as enqueue takes them: "
        "1-64 letters, digits and . _ : -), at most 300 (DynamoDB's limits on one "
        "expression; more is refused at start); unset: every queue. Not on the SQS path "
        "(DynamoDB with `queue=`): one SQS queue carries every queue's jobs and the worker "
        "function runs each job a message names, so it runs them all (a WARNING says so; "
        "docs/aws.md).",
        group=_WORKER,
        field="queues",
    ),
    Setting(
        name="SPOOL_SYNC_FINISH",
        type=FLAG,
        default=False,
        read_by="local/cli.py",
        meaning=(
            "`spool worker` writes each completion before taking the next job, so a crash "
            "re-runs at most `concurrency` attempts (slower; same as `--sync-finish`)."
        ),
        group=_WORKER,
    ),
    Setting(
        name="SPOOL_WORKER_TIMEOUT",
        type=NUMBER,
        default=None,
        read_by="chalicelib/handler_check.py",
        meaning=(
            "The worker function's timeout in seconds, at most 900 (the deployed template "
            "sets it to run_jobs'): a handler whose timeout does not fit, or a "
            "SPOOL_SQS_VISIBILITY_TIMEOUT shorter than it, is refused at start-up, naming "
            "both numbers. Unset or 0: no check."
        ),
        group=_WORKER,
    ),
    Setting(
        name="SPOOL_ATTEMPT_HISTORY",
        type=INTEGER,
        default=25,
        read_by="chalicelib/storage/history.py",
        meaning=(
            "Attempts kept per job (the last N, 1-1000): when each ran, on which worker, how "
            "it ended, its error and traceback; `spool status ID` and "
            "`GET /status/{id}?attempts=true` show them. Read by every store when it opens."
        ),
        group=_WORKER,
    ),
    Setting(
        name="SPOOL_TRACEBACK_BYTES",
        type=INTEGER,
        default=4096,
        read_by="chalicelib/attempt_record.py",
        meaning=(
            "How much of a failing attempt's traceback the worker records (its end: the "
            "frame that raised and the message), 0-65536 bytes; 0 records none."
        ),
        group=_WORKER,
    ),
    Setting(
        name="SPOOL_HEARTBEAT_SECONDS",
        type=NUMBER,
        default=15.0,
        read_by="chalicelib/attempt_record.py",
        meaning=(
            "How often a running worker records that it is alive (`run` and `drain`, "
            "0.1-3600 s); the store's live_workers reads these beats. Unset: 15, or a quarter "
            "of SPOOL_WORKER_LIVE_SECONDS when that is under 60."
        ),
        group=_WORKER,
    ),
    Setting(
        name="SPOOL_LIMITS",
        type=JSON,
        default=None,
        read_by="chalicelib/limit_settings.py",
        meaning=(
            'Execution limits held across every worker: `{"type:send_email": {"concurrency": '
            '2}, "queue:images": {"concurrency": 4, "rate": "10/s"}}`. Replaces, per queue '
            "or type, what `@handler(..., concurrency=, rate=)` declared; `null` lifts a "
            "declared limit. A held job waits without spending an attempt."
        ),
        group=_WORKER,
    ),
    Setting(
        name="SPOOL_FAIR_TENANTS",
        type=FLAG,
        default=False,
        read_by="chalicelib/limit_settings.py",
        meaning=(
            "Claim due jobs in fair turns by tenant (round robin, weighted by "
            "SPOOL_TENANT_WEIGHTS), priority still ordering each tenant's own jobs; off: "
            "priority, then run_at, across all tenants."
        ),
        group=_WORKER,
    ),
    Setting(
        name="SPOOL_TENANT_WEIGHTS",
        type=JSON,
        default=None,
        read_by="chalicelib/limit_settings.py",
        meaning=(
            'Turns per round under SPOOL_FAIR_TENANTS: `{"acme": 3}` (1-1000; default 1). '
            "A name no tenant can have (SPOOL_API_KEYS' alphabet) is refused at start."
        ),
        group=_WORKER,
    ),
    Setting(
        name="SPOOL_PUSHGATEWAY_URL",
        type=TEXT,
        default=None,
        read_by="chalicelib/events.py",
        meaning=(
            "Prometheus Pushgateway for the worker timings: each Lambda invocation pushes "
            "at its end; `spool worker` every SPOOL_PUSH_INTERVAL seconds and once as it "
            "exits. A user:password in it (http://user:password@host:9091) is sent as basic "
            "auth. Unset: no push."
        ),
        group=_WORKER,
        field="pushgateway_url",
    ),
    Setting(
        name="SPOOL_PUSH_INTERVAL",
        type=NUMBER,
        default=15.0,
        read_by="local/worker_metrics.py",
        meaning=(
            "Seconds between `spool worker`'s pushes to SPOOL_PUSHGATEWAY_URL (0.5 to "
            "86400); it also pushes once at exit."
        ),
        group=_WORKER,
    ),
    Setting(
        name="SPOOL_WORKER_LIVE_SECONDS",
        type=NUMBER,
        default=60.0,
        read_by="chalicelib/attempt_record.py",
        meaning=(
            "A worker whose last heartbeat is at most this old counts in `spool_workers_live` "
            "(1 to 86400); unless SPOOL_HEARTBEAT_SECONDS says otherwise, a worker beats every "
            "quarter of it, at most every 15 s. Raise it where workers "
            "only run now and then (Lambda invoked once a minute)."
        ),
        group=_WORKER,
    ),
    # -- AWS -----------------------------------------------------------------------------
    Setting(
        name="SPOOL_SQS_QUEUE",
        type=TEXT,
        default="spool-jobs",
        read_by="app.py",
        meaning=(
            "The SQS queue whose messages invoke `run_jobs`; read when Chalice packages or "
            "deploys the app (set per stage in .chalice/config.json)."
        ),
        group=_AWS,
    ),
    Setting(
        name="SPOOL_SQS_VISIBILITY_TIMEOUT",
        type=INTEGER,
        default=30,
        read_by="chalicelib/events.py",
        meaning=(
            "The jobs queue's visibility timeout in seconds (1-43200, as the queue is "
            "configured); `run_jobs` keeps the messages of running jobs hidden by "
            "extending it. Its first batch reads the queue's own VisibilityTimeout "
            "(once per process) and, when the two differ, logs a warning naming both and "
            "extends by the shorter; unset, it goes by the queue's own."
        ),
        group=_AWS,
    ),
    # -- Blob storage --------------------------------------------------------------------
    Setting(
        name="SPOOL_BLOB_DIR",
        type=TEXT,
        default=".spool/blobs",
        read_by="chalicelib/blobs.py",
        meaning=(
            "Folder that holds handlers' files when SPOOL_BLOB_BUCKET is unset. A "
            "relative one is under the folder the process started in, even after a "
            "handler changes the working directory."
        ),
        group=_BLOBS,
    ),
    Setting(
        name="SPOOL_BLOB_BUCKET",
        type=TEXT,
        default="",
        read_by="chalicelib/blobs.py",
        meaning="S3 bucket for handlers' files; set, it replaces the folder.",
        group=_BLOBS,
    ),
    Setting(
        name="SPOOL_BLOB_PREFIX",
        type=TEXT,
        default="",
        read_by="chalicelib/blobs.py",
        meaning=(
            "Folder inside SPOOL_BLOB_BUCKET (`media` means `media/`); must be apart from "
            "`spool/` when the bucket is the job store's."
        ),
        group=_BLOBS,
    ),
    Setting(
        name="SPOOL_BLOB_ENDPOINT_URL",
        type=TEXT,
        default=None,
        read_by="chalicelib/blobs.py",
        meaning="S3 endpoint for moto_server or another local S3; unset: AWS's.",
        group=_BLOBS,
    ),
    Setting(
        name="SPOOL_BLOB_REGION",
        type=TEXT,
        default=None,
        read_by="chalicelib/blobs.py",
        meaning="Region of SPOOL_BLOB_BUCKET; unset: boto3's default.",
        group=_BLOBS,
    ),
    # -- Built-in handler: send_email ----------------------------------------------------
    Setting(
        name="SPOOL_SMTP_HOST",
        type=TEXT,
        default="localhost",
        read_by="chalicelib/builtin/email.py",
        meaning="SMTP relay; never taken from a payload.",
        group=_EMAIL,
    ),
    Setting(
        name="SPOOL_SMTP_PORT",
        type=INTEGER,
        default=25,
        read_by="chalicelib/builtin/email.py",
        meaning=(
            "SMTP port, 1 to 65535; unset: 25, or 587 with SPOOL_SMTP_STARTTLS, 465 with "
            "SPOOL_SMTP_SSL."
        ),
        group=_EMAIL,
    ),
    Setting(
        name="SPOOL_SMTP_STARTTLS",
        type=FLAG,
        default=False,
        read_by="chalicelib/builtin/email.py",
        meaning=(
            "Upgrade the connection with STARTTLS (a server without it is a permanent error)."
        ),
        group=_EMAIL,
    ),
    Setting(
        name="SPOOL_SMTP_SSL",
        type=FLAG,
        default=False,
        read_by="chalicelib/builtin/email.py",
        meaning="Connect with implicit TLS; not together with SPOOL_SMTP_STARTTLS.",
        group=_EMAIL,
    ),
    Setting(
        name="SPOOL_SMTP_USERNAME",
        type=TEXT,
        default="",
        read_by="chalicelib/builtin/email.py",
        meaning="SMTP AUTH user; needs STARTTLS or SSL so the credentials never go in clear.",
        group=_EMAIL,
    ),
    Setting(
        name="SPOOL_SMTP_PASSWORD",
        type=TEXT,
        default="",
        read_by="chalicelib/builtin/email.py",
        meaning="SMTP AUTH password; on AWS prefer SPOOL_SMTP_PASSWORD_PARAMETER. Set, it wins "
        "over the parameter.",
        group=_EMAIL,
    ),
    Setting(
        name="SPOOL_SMTP_PASSWORD_PARAMETER",
        type=TEXT,
        default="",
        read_by="chalicelib/secret_parameters.py",
        meaning="SSM SecureString parameter holding the SMTP password (e.g. "
        "/spool/prod/smtp-password), read by the worker at its first login and kept 5 "
        "minutes, so the password is not in the Lambda environment (docs/aws.md). Needs "
        "AWS credentials allowed ssm:GetParameter on it.",
        group=_EMAIL,
    ),
    Setting(
        name="SPOOL_SMTP_FROM",
        type=TEXT,
        default="",
        read_by="chalicelib/builtin/email.py",
        meaning="Sender used when a payload names none.",
        group=_EMAIL,
    ),
    Setting(
        name="SPOOL_SMTP_ALLOWED_FROM",
        type=LIST,
        default=(),
        read_by="chalicelib/builtin/email.py",
        meaning="Comma-separated senders a payload may choose: addresses or `@domain`s, `*` for "
        "any. Empty: only addresses at the domain of `SPOOL_SMTP_FROM` (any when that is "
        "unset too).",
        group=_EMAIL,
    ),
    Setting(
        name="SPOOL_SMTP_TIMEOUT",
        type=NUMBER,
        default=30.0,
        read_by="chalicelib/builtin/email.py",
        meaning="Seconds for each SMTP network operation (0.1 to 600).",
        group=_EMAIL,
    ),
    Setting(
        name="SPOOL_SMTP_CA_FILE",
        type=TEXT,
        default=None,
        read_by="chalicelib/builtin/email.py",
        meaning="Extra CA bundle (PEM) to verify the relay's certificate with.",
        group=_EMAIL,
    ),
    Setting(
        name="SPOOL_SMTP_LOCAL_HOSTNAME",
        type=TEXT,
        default=None,
        read_by="chalicelib/builtin/email.py",
        meaning="Name sent in EHLO; unset: this machine's name.",
        group=_EMAIL,
    ),
    Setting(
        name="SPOOL_SMTP_MESSAGE_ID_DOMAIN",
        type=TEXT,
        default="",
        read_by="chalicelib/builtin/email.py",
        meaning="Domain of the Message-ID made from the job id; empty: the sender's domain.",
        group=_EMAIL,
    ),
    # -- Built-in handler: http_request --------------------------------------------------
    Setting(
        name="SPOOL_HTTP_ALLOWLIST",
        type=LIST,
        default=(),
        read_by="chalicelib/builtin/http_request.py",
        meaning=(
            "Comma-separated hosts an `http_request` job may reach: names, `*.suffix`es, "
            "IPs and CIDRs. Empty: none."
        ),
        group=_HTTP,
    ),
    Setting(
        name="SPOOL_HTTP_ALLOW_PRIVATE",
        type=FLAG,
        default=False,
        read_by="chalicelib/builtin/http_request.py",
        meaning="Let allowlisted hosts resolve to loopback, private and CGNAT addresses.",
        group=_HTTP,
    ),
    Setting(
        name="SPOOL_HTTP_PORTS",
        type=LIST,
        default=("80", "443", "1024-65535"),
        read_by="chalicelib/builtin/http_request.py",
        meaning=(
            "Ports `http_request` URLs (and each redirect) may name: ports and ranges "
            "(`443, 8000-8999`). A `*.suffix` or CIDR entry of the allowlist opens no "
            "other port; the default leaves out the privileged ports of other protocols "
            "(SMTP 25, SSH 22, LDAP 389 ...)."
        ),
        group=_HTTP,
    ),
    Setting(
        name="SPOOL_HTTP_CA_FILE",
        type=TEXT,
        default=None,
        read_by="chalicelib/builtin/http_request.py",
        meaning="Extra CA bundle (PEM) for HTTPS targets.",
        group=_HTTP,
    ),
    # -- Built-in handler: resize_image --------------------------------------------------
    Setting(
        name="SPOOL_IMAGE_MAX_OUTPUT_PIXELS",
        type=INTEGER,
        default=40_000_000,
        read_by="chalicelib/builtin/image_limits.py",
        meaning="Largest width x height of one `resize_image` output.",
        group=_IMAGES,
    ),
    Setting(
        name="SPOOL_IMAGE_MAX_TOTAL_PIXELS",
        type=INTEGER,
        default=100_000_000,
        read_by="chalicelib/builtin/image_limits.py",
        meaning="Largest sum of width x height over one job's distinct outputs.",
        group=_IMAGES,
    ),
    Setting(
        name="SPOOL_IMAGE_MAX_OUTPUTS",
        type=INTEGER,
        default=20,
        read_by="chalicelib/builtin/image_limits.py",
        meaning="Most entries in `widths` + `sizes` (1 to 20; can only lower the payload's 20).",
        group=_IMAGES,
    ),
    Setting(
        name="SPOOL_IMAGE_MAX_PIXELS",
        type=INTEGER,
        default=40_000_000,
        read_by="chalicelib/builtin/image_limits.py",
        meaning="Largest image (width x height) `resize_image` decodes.",
        group=_IMAGES,
    ),
    Setting(
        name="SPOOL_IMAGE_MAX_BYTES",
        type=INTEGER,
        default=41_943_040,
        read_by="chalicelib/builtin/image_limits.py",
        meaning="Largest image file `resize_image` reads.",
        group=_IMAGES,
    ),
    # -- Logs (chalicelib/logs.py) -------------------------------------------------------
    Setting(
        name="SPOOL_LOG_LEVEL",
        type=TEXT,
        default="INFO",
        read_by="chalicelib/logs.py",
        meaning=(
            "Level of Spool's log lines (DEBUG, INFO, WARNING, ERROR, CRITICAL): INFO has "
            "one line per job event and HTTP request, DEBUG adds each attempt's start; "
            "one-shot CLI commands (`spool enqueue`, `status`, ...) default to WARNING."
        ),
        group=_STORE,
    ),
    Setting(
        name="SPOOL_LOG_FORMAT",
        type=TEXT,
        default="text",
        read_by="chalicelib/logs.py",
        meaning=(
            "`json` (one object per line, for CloudWatch Logs Insights; the default on "
            "Lambda) or `text` (the default elsewhere). Secrets are masked in both."
        ),
        group=_STORE,
    ),
    Setting(
        name="SPOOL_LOG_TAIL_LINES",
        type=INTEGER,
        default=20,
        read_by="chalicelib/logs.py",
        meaning=(
            "How many of a handler's last `ctx.log` lines a failing attempt keeps in its "
            "record (`log_tail`, shown by `spool status ID`), 0-1000; 0 keeps none."
        ),
        group=_WORKER,
    ),
    Setting(
        name="SPOOL_CAPTURE_OUTPUT",
        type=FLAG,
        default=True,
        read_by="chalicelib/handler_output.py",
        meaning=(
            "What a handler prints (`print`, `sys.stdout`/`sys.stderr` writes) during an "
            "attempt becomes its job's log lines, one per printed line, escaped (stdout at "
            "INFO, stderr at WARNING, `stream=` says which) and kept in `log_tail` as "
            "`ctx.log`'s are; `false` writes it to the worker's output as it is, where a "
            "payload's newline can forge a line of Spool's."
        ),
        group=_WORKER,
    ),
    Setting(
        name="SPOOL_SECRET_VARIABLES",
        type=LIST,
        default="",
        read_by="chalicelib/log_redact.py",
        meaning=(
            "Names of environment variables (any names, e.g. `PARTNER_API_KEY`) whose values "
            "are secrets your handlers use: masked by value, as Spool's own secrets are, in "
            "logs, `last_error`, tracebacks and `log_tail`, which reach the job's tenant. "
            "The names are not masked: a variable a worker lacks is named in its "
            "`KeyError`."
        ),
        group=_WORKER,
    ),
    # -- Webhooks (docs/webhooks.md) -------------------------------------------------------
    Setting(
        name="SPOOL_WEBHOOKS",
        type=JSON,
        default=None,
        read_by="chalicelib/webhooks/source.py",
        meaning=(
            'Per tenant, its signing secrets and default endpoint: `{"TENANT": {"url": '
            '"https://...", "secrets": ["whsec_NEW", "whsec_OLD"]}}`. One or two secrets '
            "(two while rotating: both sign), each the tenant's own: a secret given to two "
            "tenants is refused at start (either could sign for the other). A tenant without "
            "one cannot ask for webhooks "
            "(422). A name no tenant can have (SPOOL_API_KEYS' alphabet) is refused at "
            "start. Unset (and no SPOOL_WEBHOOKS_PARAMETER): no webhooks, and no delivery "
            "thread. On AWS prefer SPOOL_WEBHOOKS_PARAMETER; set, this one wins over it."
        ),
        group=_WEBHOOKS,
    ),
    Setting(
        name="SPOOL_WEBHOOKS_PARAMETER",
        type=TEXT,
        default="",
        read_by="chalicelib/webhooks/source.py",
        meaning="SSM SecureString parameter holding what SPOOL_WEBHOOKS would (e.g. "
        "/spool/prod/webhooks), so the signing secrets are not in the Lambda environment "
        "(docs/webhooks.md). Read when first needed (the first enqueue, a delivery) and "
        "kept 5 minutes; each secret in it is masked in the logs. Unreadable: enqueues "
        "answer 503 naming it and deliveries wait. Needs AWS credentials allowed "
        "ssm:GetParameter on it.",
        group=_WEBHOOKS,
    ),
    Setting(
        name="SPOOL_WEBHOOK_ALLOWLIST",
        type=LIST,
        default=(),
        read_by="chalicelib/webhooks/config.py",
        meaning=(
            "Hosts callback URLs may reach (names, `*.suffix`es, IPs, CIDRs), as "
            "`SPOOL_HTTP_ALLOWLIST`. Empty: any public host. Metadata addresses never."
        ),
        group=_WEBHOOKS,
    ),
    Setting(
        name="SPOOL_WEBHOOK_ALLOW_PRIVATE",
        type=FLAG,
        default=False,
        read_by="chalicelib/webhooks/config.py",
        meaning="Let callback URLs reach loopback, private and CGNAT addresses.",
        group=_WEBHOOKS,
    ),
    Setting(
        name="SPOOL_WEBHOOK_PORTS",
        type=LIST,
        default=("80", "443", "1024-65535"),
        read_by="chalicelib/webhooks/config.py",
        meaning=(
            "Ports callback URLs may name: ports and ranges (`443, 8000-8999`). The "
            "default leaves out the privileged ports of other protocols (SMTP 25, SSH 22, "
            "LDAP 389 ...): a POST there is never a webhook. Refused at enqueue (422), in "
            "a tenant's default `url` at start, and at each delivery."
        ),
        group=_WEBHOOKS,
    ),
    Setting(
        name="SPOOL_WEBHOOK_CA_FILE",
        type=TEXT,
        default=None,
        read_by="chalicelib/webhooks/config.py",
        meaning="Extra CA certificates (PEM) trusted for https callback URLs.",
        group=_WEBHOOKS,
    ),
    Setting(
        name="SPOOL_WEBHOOK_MAX_ATTEMPTS",
        type=INTEGER,
        default=10,
        read_by="chalicelib/webhooks/config.py",
        meaning="Attempts per delivery before it is marked failed (1-100).",
        group=_WEBHOOKS,
    ),
    Setting(
        name="SPOOL_WEBHOOK_BACKOFF",
        type=NUMBER,
        default=5.0,
        read_by="chalicelib/webhooks/config.py",
        meaning=(
            "Seconds of the first retry's backoff step (0 to 3600); "
            "doubles each attempt, with jitter "
            "(half to all of the step). A longer `Retry-After` wins. At most "
            "`SPOOL_WEBHOOK_BACKOFF_MAX` (a larger one is refused at start)."
        ),
        group=_WEBHOOKS,
    ),
    Setting(
        name="SPOOL_WEBHOOK_BACKOFF_MAX",
        type=NUMBER,
        default=3600.0,
        read_by="chalicelib/webhooks/config.py",
        meaning="The largest backoff step, in seconds (0 to 86400).",
        group=_WEBHOOKS,
    ),
    Setting(
        name="SPOOL_WEBHOOK_TIMEOUT",
        type=NUMBER,
        default=10.0,
        read_by="chalicelib/webhooks/config.py",
        meaning=(
            "Seconds one delivery attempt may take, DNS lookup to answer (0.1-50). A delivery "
            "is leased for twice this plus 5 s: a worker killed mid-delivery delays it by that."
        ),
        group=_WEBHOOKS,
    ),
    Setting(
        name="SPOOL_WEBHOOK_CONCURRENCY",
        type=INTEGER,
        default=4,
        read_by="chalicelib/webhooks/config.py",
        meaning="Deliveries a process makes at once, on threads of their own (1-64).",
        group=_WEBHOOKS,
    ),
    Setting(
        name="SPOOL_WEBHOOK_POLL",
        type=NUMBER,
        default=1.0,
        read_by="chalicelib/webhooks/config.py",
        meaning=(
            "Seconds an idle delivery thread waits before looking for due deliveries (0.01 to 60)."
        ),
        group=_WEBHOOKS,
    ),
    Setting(
        name="SPOOL_WEBHOOK_HISTORY",
        type=INTEGER,
        default=25,
        read_by="chalicelib/webhooks/outbox.py",
        meaning=(
            "Finished (delivered or failed) webhook deliveries kept per job, the newest N "
            "(1-100); pending ones are always kept. Each new delivery's write drops the "
            "older ones, so `GET /status/{id}?webhooks=true` lists at most N finished. "
            "Read by every store when it opens."
        ),
        group=_WEBHOOKS,
    ),
    Setting(
        name="SPOOL_WEBHOOK_MAX_RESULT_BYTES",
        type=INTEGER,
        default=65536,
        read_by="chalicelib/webhooks/config.py",
        meaning=(
            "A job result larger than this (as JSON) is left out of the webhook body "
            "(`result_omitted: true`); the receiver reads it from `GET /status`. 0 to 100000."
        ),
        group=_WEBHOOKS,
    ),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in CATALOG}

# How far (letters added, dropped, changed or swapped) a SPOOL_* name that is no setting
# may be from one and still be taken for a misspelling of it. Two catches the typos
# people make (SPOOL_CONCURENCY, SPOOL_STORE_UR, SPOOL_DEMO_HANDLER) and leaves alone the
# names of other programs and of handlers' own settings: the nearest of those in this
# repository (SPOOL_TEST_REDIS_URL to SPOOL_STORE_URL) are four or more away.
MISSPELT_DISTANCE = 2
# A name cut short (SPOOL_STORE for SPOOL_STORE_URL, SPOOL_DEMO for SPOOL_DEMO_HANDLERS)
# is as far from its setting as the letters it lacks, so the distance alone let it
# through: any SPOOL_* name a setting's name begins with is taken for it too. When
# several settings begin so, at most this many (the shortest) are named.
CUT_SHORT_SHOWN = 3
_PREFIX = "SPOOL_"


def _distance(a: str, b: str) -> int:
    """Edits (insert, delete, substitute, swap two neighbours) that turn a into b."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i]
        for j, cb in enumerate(b, 1):
            cost = row[j - 1] + 1
            cost = min(cost, previous[j] + 1, previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, previous2[j - 2] + 1)
            row.append(cost)
        previous2, previous = previous, row
    return previous[-1]


def misspelt(names: Iterable[str]) -> list[tuple[str, str]]:
    """(name, the setting it resembles) for each name that looks like a setting but is
    none: a SPOOL_* name within MISSPELT_DISTANCE of one, the start of one's name cut
    short (SPOOL_STORE), or a setting's name in the wrong case (`spool_store_url`).
    Such a variable is read by nothing, so the setting it was meant to be keeps its
    default without a word: a job enqueued into the local SQLite file instead of
    SPOOL_STORE_URL's Postgres, a worker on 8 threads, not 32. A name cut short that
    several settings begin with names the shortest few ("A, B or C")."""
    found = []
    for name in sorted(names):
        upper = name.upper()
        if name in BY_NAME or not upper.startswith(_PREFIX):
            continue
        near = _near(upper)
        if near:
            found.append((name, near))
            continue
        begun = _begun_by(upper)
        if begun:
            found.append((name, begun))
    return found


def _near(upper: str) -> str:
    """The setting within MISSPELT_DISTANCE of `upper` (the nearest, then the first by
    name), or "" for none.

    Every SPOOL_* variable that is no setting was measured against each of the ~100
    settings, twice, at every start of `spool serve`, `spool worker` and the CLI: 30 ms
    a variable (0.13 s for the test suite's four, in each process a test starts). An
    edit changes the length by one at most, so a setting whose name is longer or
    shorter by more than MISSPELT_DISTANCE is farther than that: only the others are
    measured, with the same answer."""
    near = [
        (distance, s.name)
        for s in CATALOG
        if abs(len(s.name) - len(upper)) <= MISSPELT_DISTANCE
        and (distance := _distance(upper, s.name)) <= MISSPELT_DISTANCE
    ]
    return min(near)[1] if near else ""


def _begun_by(upper: str) -> str:
    """The settings whose names begin with `upper` (more than the bare prefix), as a
    suggestion: "SPOOL_STORE_URL", or the shortest few, "A, B or C"; "" for none."""
    if len(upper) <= len(_PREFIX):
        return ""
    begun = (s.name for s in CATALOG if s.name.startswith(upper))
    names = sorted(begun, key=lambda n: (len(n), n))
    shown = names[:CUT_SHORT_SHOWN]
    if len(shown) < 2:
        return "".join(shown)
    return f"{', '.join(shown[:-1])} or {shown[-1]}"


def misspelt_refusal(names: Iterable[str]) -> tuple[str, str] | None:
    """(problem, fix) naming each misspelt setting among `names`, or None: one wording
    for every local entry point that refuses them (`spool`, local/cli_errors.py; the SQS
    poller; `chalice local`, refuse_under_chalice_local below)."""
    found = misspelt(names)
    if not found:
        return None
    named = ", ".join(f"{name} (did you mean {setting}?)" for name, setting in found)
    verb = "is not a Spool setting" if len(found) == 1 else "are not Spool settings"
    return (
        f"{named} {verb}, so nothing reads {'it' if len(found) == 1 else 'them'}",
        f"Rename or unset {'it' if len(found) == 1 else 'them'}; docs/settings.md lists "
        "every setting",
    )


# Variables of Spool's own test suite and benchmarks (docs/testing.md): never unread.
RESERVED_PREFIXES = ("SPOOL_TEST_", "SPOOL_REQUIRE_", "SPOOL_BENCH_")
RESERVED_NAMES = frozenset({"SPOOL_HYPOTHESIS_PROFILE"})
# A word of a variable's name (HANDLER, a trailing S dropped) hints at the settings
# whose names have it only when at most this many do: HANDLERS (2) and STORE (1) hint,
# while API, KEY, URL, HTTP or SMTP name too many settings to point at one.
HINT_WORD_SETTINGS = 3


def _stems(name: str) -> set[str]:
    """The words of a SPOOL_* name after the prefix, a plural's S dropped."""
    words = name.upper()[len(_PREFIX) :].split("_")
    return {w[:-1] if len(w) > 3 and w.endswith("S") else w for w in words if w}


def _hint_words() -> dict[str, list[str]]:
    """Each word that hints, with the settings whose names have it."""
    named: dict[str, list[str]] = {}
    for setting in CATALOG:
        for stem in _stems(setting.name):
            named.setdefault(stem, []).append(setting.name)
    return {w: names for w, names in named.items() if len(names) <= HINT_WORD_SETTINGS}


def _hinted(name: str) -> str:
    """The setting sharing the most hinting words with `name`, or "" for none; on a
    tie, the one with the fewest words of its own besides (SPOOL_WORKER_CONCURRENCY:
    SPOOL_CONCURRENCY, not SPOOL_WEBHOOK_CONCURRENCY), then the nearer."""
    hints = _hint_words()
    shared: dict[str, int] = {}
    for stem in _stems(name) & hints.keys():
        for setting in hints[stem]:
            shared[setting] = shared.get(setting, 0) + 1
    if not shared:
        return ""
    upper = name.upper()
    return min(shared, key=lambda s: (-shared[s], len(_stems(s)), _distance(upper, s), s))


def unread(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """(name, the setting it may have meant or "") for each SPOOL_* variable of
    `environ` that nothing in Spool reads and misspelt() does not refuse.

    SPOOL_HANDLER_MODULES=myapp.jobs (meant: SPOOL_HANDLERS) is too far from every
    setting to be refused as a typo, as other programs' and handlers' own SPOOL_* names
    are, so `spool worker` started on the built-in types without a word. Left out: the
    suite's and benchmarks' variables (RESERVED_*), and names SPOOL_SECRET_VARIABLES
    lists (declared as a handler's own)."""
    refused = {name for name, _ in misspelt(environ)}
    declared = {v.strip().upper() for v in environ.get("SPOOL_SECRET_VARIABLES", "").split(",")}
    found = []
    for name in sorted(environ):
        upper = name.upper()
        if (
            not upper.startswith(_PREFIX)
            or upper in BY_NAME
            or name in refused
            or upper in declared
            or upper in RESERVED_NAMES
            or upper.startswith(RESERVED_PREFIXES)
        ):
            continue
        found.append((name, _hinted(name)))
    return found


def unread_warning(environ: Mapping[str, str]) -> str | None:
    """The one start-up line naming each unread SPOOL_* variable (None: none): printed,
    not refused, by `spool serve`, `spool worker`, the SQS poller and `chalice local`,
    whose handlers and store would silently be the defaults when one was meant for a
    setting, while a handler's own SPOOL_* name keeps working."""
    found = unread(environ)
    if not found:
        return None
    named = ", ".join(f"{n} (did you mean {s}?)" if s else n for n, s in found)
    one = len(found) == 1
    return (
        f"spool: warning: {named} {'is not a Spool setting' if one else 'are not Spool settings'}"
        f", so nothing in Spool reads {'it' if one else 'them'}. Rename "
        f"{'it' if one else 'them'} to the setting meant (docs/settings.md lists every "
        "setting); for a variable your handlers read, drop the SPOOL_ prefix to silence this."
    )


def warn_unread(environ: Mapping[str, str]) -> None:
    """Print unread_warning's line on stderr, if there is one."""
    line = unread_warning(environ)
    if line is not None:
        print(line, file=sys.stderr, flush=True)


def refuse_under_chalice_local(environ: Mapping[str, str]) -> bool:
    """Under `chalice local`, stop (exit 2, `spool`'s one line) on a misspelt SPOOL_*
    variable, as `spool serve` and `spool worker` do: SPOOL_STORE_UR was read by nothing
    there, and the local stage served its default SQLite file without a word. And on a
    setting whose value the HTTP edge refuses (chalicelib/edge_settings.py), as `spool
    serve` does: a malformed SPOOL_API_KEYS started and then answered 503 to everything.

    app.py calls this only when the chalice command line loads it (AWS_CHALICE_CLI_MODE,
    and never on Lambda), so a cold start neither imports this module nor pays for the
    check. Only `chalice local` is refused: `chalice package` and `deploy` load app.py
    too, but the shell's variables never reach the functions they build.

    With its autoreloader (the default), chalice serves from a child process
    (CHALICE_WORKER set) that loads app.py on a thread of its own, outside the click
    command: there a SystemExit would end only that thread and leave the child
    watching files with nothing served, so the child ends at once (os._exit); chalice's
    parent then exits too (with 0: it reports only its own restarts).

    True when this is `chalice local` (and nothing was refused): app.py then has
    chalice's server read requests as `spool serve` does (chalice_local_http)."""
    import threading

    import click

    context = click.get_current_context(silent=True)
    local = context is not None and context.info_name == "local"
    if not (local or environ.get("CHALICE_WORKER")):
        return False
    refusal = misspelt_refusal(environ)
    if refusal is None:
        from chalicelib.edge_settings import value_refusal

        refusal = value_refusal(environ)
    if refusal is None:
        warn_unread(environ)  # SPOOL_HANDLER_MODULES: too far to refuse, still unread
        return True
    print(refusal_line(*refusal), file=sys.stderr, flush=True)
    if threading.current_thread() is not threading.main_thread():
        import os

        os._exit(2)
    raise SystemExit(2)


def refusal_line(problem: str, fix: str) -> str:
    """`spool: <problem>. <fix>.` as `spool` prints a refusal; no fix: the problem alone."""
    text = "spool: " + problem.rstrip(". ") + "."
    return text + (f" {fix.rstrip('. ')}." if fix else "")


def shown(value: object) -> str:
    """A default as the page shows it."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    if value == "" or value == ():
        return "empty"
    if isinstance(value, tuple):
        return "`" + ",".join(str(v) for v in value) + "`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    """docs/settings.md, exactly."""
    lines = [
        "# Settings",
        "",
        "<!-- Generated from chalicelib/settings_catalog.py; edit the catalog, then run",
        f"     {WRITE_COMMAND} -->",
        "",
        "Spool reads its settings from `SPOOL_*` environment variables, once per process.",
        "Unset and empty mean the same: the default. A flag is `true`/`false` (also",
        "`1`/`0`, `yes`/`no`, `on`/`off`); a list is comma-separated. On AWS the",
        "variables come from `.chalice/config.json` (per stage) and `infra/`; locally",
        "from the environment `spool` runs in.",
        "",
        "A `SPOOL_*` variable that is no setting but one or two letters away from one",
        "(`SPOOL_CONCURENCY`), a setting's name cut short (`SPOOL_STORE` for",
        "`SPOOL_STORE_URL`, `SPOOL_DEMO` for `SPOOL_DEMO_HANDLERS`), or a setting's name",
        "in lower case, stops every `spool` command (`spool serve` and `spool worker`",
        "too), the SQS poller and `chalice local` with exit code 2 and a line naming the",
        "setting it resembles: nothing reads it, so the setting it was meant to be would",
        "silently keep its default. Lambda never checks (a cold start does not pay for",
        "it); `make package` checks the variables `.chalice/config.json` gives the",
        "stage and its functions instead, refusing such a name before anything is built.",
        "",
        "Any other `SPOOL_*` variable that is no setting is not refused (your handlers",
        "may read names of their own) but named at start-up: `spool serve`, `spool",
        "worker`, the SQS poller, `chalice local` and `make package` (for the stage's",
        "variables) print one line, `spool: warning:",
        "SPOOL_HANDLER_MODULES (did you mean SPOOL_HANDLERS?) is not a Spool setting, so",
        "nothing in Spool reads it. ...`, and go on. The setting is suggested when the",
        "name shares a word with few settings (HANDLER, STORE, LEASE; not API, KEY or",
        "URL, which many settings have). One-shot commands (`spool enqueue`, `status`,",
        "...) say nothing. A variable your handlers read is silenced by dropping the",
        "`SPOOL_` prefix from its name, or by listing it in `SPOOL_SECRET_VARIABLES`",
        "when it is a secret; the test suite's and benchmarks' `SPOOL_TEST_*`,",
        "`SPOOL_REQUIRE_*`, `SPOOL_BENCH_*` and `SPOOL_HYPOTHESIS_PROFILE`",
        "(docs/testing.md) are never named.",
        "",
        "A test (tests/test_settings_catalog.py) fails when the code reads a setting",
        "this page does not list, when a listed one is no longer read, or when a",
        "default here disagrees with the code.",
        "",
    ]
    for group in GROUPS:
        members = [s for s in CATALOG if s.group == group]
        if not members:
            continue
        lines += [
            f"## {group}",
            "",
            "| Setting | Type | Default | Read by | Meaning |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| `{s.name}` | {s.type} | {shown(s.default)} | `{s.read_by}` | {_cell(s.meaning)} |"
            for s in members
        ]
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chalicelib.settings_catalog",
        description="Print docs/settings.md from the settings catalog, or write/check it.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write docs/settings.md")
    mode.add_argument("--check", action="store_true", help="exit 1 if the page is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        DOC_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {DOC_PATH} ({len(CATALOG)} settings)")
        return 0
    if args.check:
        current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else ""
        if current == text:
            return 0
        diff = difflib.unified_diff(
            current.splitlines(), text.splitlines(), "docs/settings.md", "generated", lineterm=""
        )
        print("\n".join(diff))
        print(f"docs/settings.md is out of date: run {WRITE_COMMAND}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
