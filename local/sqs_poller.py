"""Feed SQS messages to app.py's SQS handler the way Lambda's event source mapping does,
and invoke its scheduled handler the way EventBridge's rule does.

On AWS, Lambda polls the queue, gathers up to `batch_size` records (for up to
`batching_window` seconds, the event source's MaximumBatchingWindowInSeconds,
when fewer are waiting), calls the function with them, and then, with
ReportBatchItemFailures on (infra/ turns it on), deletes every message except
those the function lists in `batchItemFailures`; if the function raises, it
deletes none, and they all come back once their visibility timeout passes. This poller does the same
against any SQS endpoint (moto_server on 127.0.0.1 in the tests), with the
same event shape, so the handler tested offline is the handler deployed.

Between batches it also invokes app.py's scheduled functions (`drain_due`) at
their rate (once a minute), with EventBridge's event, as the deployed rule does:
without them jobs delayed past SQS's 15 minutes, jobs whose message was lost,
periodic schedules and webhooks never happen (`--no-schedule` leaves them out).
One invocation at a time, as in one Lambda container.

    SPOOL_STORE_URL='dynamodb://jobs?queue=jobs&endpoint=http://127.0.0.1:5000' \\
        .venv/bin/python -m local.sqs_poller

The queue and endpoint come from the store URL (the same one the handler's
runtime uses), so there is nothing else to configure. With SPOOL_API_KEYS unset
it offers the demo handlers unless SPOOL_DEMO_HANDLERS says otherwise, as
`spool serve` does (local/serve.py), so every job type the API accepts runs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chalice.app import Chalice, Rate, ScheduledEventConfig, SQSEventConfig

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import DeleteMessageBatchRequestEntryTypeDef, MessageTypeDef

    from chalicelib.runtime import Runtime

from chalicelib.store_outage import Outage, fatal_error, is_fatal
from local import cli_ranges

log = logging.getLogger("spool.sqs_poller")

FUNCTION_TIMEOUT_MS = 900_000
DEMO_VARIABLE = "SPOOL_DEMO_HANDLERS"  # as local/serve.py's
STOPPING = "stopping: finishing the batch in hand"
READ_SLACK = 5  # seconds an SQS answer may take past a receive's long poll
RATE_SECONDS = {Rate.MINUTES: 60, Rate.HOURS: 3600, Rate.DAYS: 86400}


@dataclass(frozen=True)
class BatchResult:
    received: int = 0
    deleted: int = 0
    failed: int = 0  # left on the queue: listed in batchItemFailures, or the handler raised
    crashed: bool = False


def answering_promptly(sqs: SQSClient, wait_seconds: int) -> SQSClient:
    """The store's SQS client, made again to give up on a queue that stopped answering
    within READ_SLACK seconds past a receive's long poll, and to try a second time only.

    The store's client waits 20 s for an answer and tries five times: a queue that hung
    (an endpoint stopped, a network gone quiet) held a receive for about 2 minutes, and
    a stop asked meanwhile waited for it, past a service manager's stop timeout
    (systemd's 90 s), which then SIGKILLs, whatever batch is in hand. A receive holds
    nothing: one given up on is tried again with the poller's backoff."""
    import boto3
    from botocore.config import Config as BotoConfig

    bounded = BotoConfig(
        read_timeout=wait_seconds + READ_SLACK, retries={"mode": "standard", "max_attempts": 2}
    )
    client: SQSClient = boto3.session.Session().client(
        "sqs",
        endpoint_url=sqs.meta.endpoint_url,
        region_name=sqs.meta.region_name,
        config=sqs.meta.config.merge(bounded),
    )
    return client


def sqs_function(app: Chalice) -> str:
    """The name of the app's one SQS-triggered function."""
    names = [s.name for s in app.event_sources if isinstance(s, SQSEventConfig)]
    if len(names) != 1:
        raise ValueError(f"expected one @app.on_sqs_message function, found {names}")
    return names[0]


def failed_ids(response: Any, batch: Sequence[str]) -> set[str]:
    """Which messages stay on the queue, read as Lambda reads a partial-batch response.

    No response, or no batchItemFailures, means all succeeded; an identifier
    that is empty or not in the batch makes Lambda treat the whole batch as failed.
    """
    if not isinstance(response, Mapping) or response.get("batchItemFailures") is None:
        return set()
    failures = response["batchItemFailures"]
    if not isinstance(failures, list):
        return set(batch)
    ids: set[str] = set()
    for entry in failures:
        item = entry.get("itemIdentifier") if isinstance(entry, Mapping) else None
        if not isinstance(item, str) or item not in batch:
            return set(batch)
        ids.add(item)
    return ids


def schedule_period(expression: object) -> float | None:
    """Seconds between a schedule's invocations: Rate(1, MINUTES) or "rate(1 minute)";
    None for a cron expression, which this poller does not emulate."""
    if isinstance(expression, Rate):
        return float(expression.value * RATE_SECONDS[expression.unit])
    found = re.fullmatch(r"rate\((\d+) (minute|hour|day)s?\)", str(expression).strip())
    if found is None:
        return None
    return float(int(found.group(1)) * RATE_SECONDS[found.group(2).upper() + "S"])


class Schedule:
    """app.py's scheduled functions, invoked at their rates as EventBridge's rules would
    invoke them: the first time when the poller starts, so a restart catches up at once."""

    def __init__(
        self,
        app: Chalice,
        timeout_ms: int = FUNCTION_TIMEOUT_MS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.timeout_ms = timeout_ms
        self.clock = clock
        self.periods: dict[str, float] = {}
        for source in app.event_sources:
            if not isinstance(source, ScheduledEventConfig):
                continue
            period = schedule_period(source.schedule_expression)
            if period is None:
                log.warning("%s runs on a cron schedule: not invoked here", source.name)
            else:
                self.periods[source.name] = period
        self.next_at = dict.fromkeys(self.periods, clock())
        self.invocations = 0

    def describe(self) -> str:
        every = [f"{name} every {period:g}s" for name, period in self.periods.items()]
        return ", ".join(every) or "none (app.py has no rate schedule)"

    def run_due(self) -> int:
        """Invoke each function whose time has come; returns how many were invoked.
        A failed invocation is logged and waits for its next time, as EventBridge's
        rule does once its retries are spent."""
        from chalicelib.errors import StoreNotMigrated, StoreUnavailable
        from local.emulator import context as local_context  # no Lambda request id
        from local.emulator import scheduled_event

        invoked = 0
        for name, period in self.periods.items():
            now = self.clock()
            if now < self.next_at[name]:
                continue
            self.next_at[name] = now + period
            context = local_context(name, self.timeout_ms)
            self.invocations += 1
            invoked += 1
            try:
                done = self.app.handler_map[name](scheduled_event(self.app, name), context)
            except StoreUnavailable as exc:
                log.warning("the scheduled %s found the store unavailable: %s", name, exc.message)
                continue
            except StoreNotMigrated as exc:  # a table lost (a restarted moto_server): the
                # store's answer, said in one line, not a traceback a minute as if a bug
                log.warning("the scheduled %s found no store to use: %s", name, exc.message)
                continue
            except Exception:
                log.exception("the scheduled %s raised; it runs again in %gs", name, period)
                continue
            if isinstance(done, Mapping) and any(done.values()):  # it released or enqueued
                log.info("scheduled %s: %s", name, dict(done))
        return invoked


class SqsPoller:
    def __init__(
        self,
        app: Chalice,
        sqs: SQSClient,
        queue_url: str,
        *,
        batch_size: int = 10,
        wait_seconds: int = 1,
        timeout_ms: int = FUNCTION_TIMEOUT_MS,
        region: str = "us-east-1",
        batching_window: float = 0.0,
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.batch_size = max(1, min(10, batch_size))
        self.wait_seconds = wait_seconds
        self.batching_window = max(0.0, batching_window)
        self.timeout_ms = timeout_ms
        self.region = region
        self.function = sqs_function(app)
        # Polls that fail (the queue or the store unreachable): said once per outage,
        # jittered backoff up to 5 s between tries (chalicelib/store_outage.py).
        self.outage = Outage(log, "the SQS poller")
        self.handler: Callable[[dict[str, Any], Any], Any] = app.handler_map[self.function]
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        self.queue_arn = attributes["Attributes"]["QueueArn"]
        self.invocations = 0

    def record(self, message: MessageTypeDef) -> dict[str, Any]:
        """One Lambda SQS event record, as the event source mapping builds it."""
        body = message.get("Body", "")
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": body,
            "attributes": dict(message.get("Attributes", {})),
            "messageAttributes": dict(message.get("MessageAttributes", {})),
            "md5OfBody": message.get("MD5OfBody") or hashlib.md5(body.encode()).hexdigest(),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn,
            "awsRegion": self.region,
        }

    def receive(self, most: int, wait_seconds: int) -> list[MessageTypeDef]:
        """One ReceiveMessage, as Lambda's poller sends it."""
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=max(1, min(10, most)),
            WaitTimeSeconds=wait_seconds,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(response.get("Messages", []))

    def poll_once(self) -> BatchResult:
        """Gather one batch and deliver it: with a batching window, keep receiving
        until the batch is full or the window, counted from the first message, ends."""
        messages = self.receive(self.batch_size, self.wait_seconds)
        if messages and self.batching_window > 0:
            closes = time.monotonic() + self.batching_window
            while len(messages) < self.batch_size:
                left = closes - time.monotonic()
                if left <= 0:
                    break
                wait = min(20, self.wait_seconds, max(0, int(left)))
                more = self.receive(self.batch_size - len(messages), wait)
                messages += more
                if not more and wait == 0:
                    time.sleep(min(left, 0.05))
        return self.deliver(messages)

    def deliver(self, messages: Sequence[MessageTypeDef]) -> BatchResult:
        """Invoke the function with these messages, then delete what it did not report
        as failed (all of them unless it raised), as the event source mapping does."""
        if not messages:
            return BatchResult()
        from local.emulator import context as local_context  # no Lambda request id

        event = {"Records": [self.record(m) for m in messages]}
        context = local_context(self.function, self.timeout_ms)
        self.invocations += 1
        try:
            result = self.handler(event, context)
        except Exception:
            log.exception("the SQS handler raised: the whole batch returns to the queue")
            return BatchResult(len(messages), 0, len(messages), crashed=True)
        failed = failed_ids(result, [m["MessageId"] for m in messages])
        done = [m for m in messages if m["MessageId"] not in failed]
        deleted = self._delete(done)
        return BatchResult(len(messages), deleted, len(failed))

    def _delete(self, messages: Sequence[MessageTypeDef]) -> int:
        deleted = 0
        for start in range(0, len(messages), 10):
            entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(messages[start : start + 10])
            ]
            response = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            deleted += len(response.get("Successful", []))
        return deleted

    def run(
        self,
        stop: threading.Event,
        idle_exit: float | None = None,
        max_seconds: float | None = None,
        schedule: Schedule | None = None,
    ) -> int:
        """Poll until stopped (or idle for idle_exit seconds, or max_seconds pass),
        invoking the scheduled functions between batches when they are due; returns
        how many messages were handled and deleted."""
        started = last_work = time.monotonic()
        deleted = 0
        while not stop.is_set():
            now = time.monotonic()
            if max_seconds is not None and now - started >= max_seconds:
                break
            if idle_exit is not None and now - last_work >= idle_exit:
                break
            if schedule is not None:
                schedule.run_due()
            try:
                result = self.poll_once()
            except Exception as exc:  # the queue is unreachable: back off, as Lambda does
                if is_fatal(exc):  # refused credentials: waiting cannot fix them
                    log.error("the SQS poller stops: %s", fatal_error(exc))
                    break
                stop.wait(self.outage.failed(exc))
                continue
            self.outage.recovered()
            if result.received:
                last_work = time.monotonic()
                deleted += result.deleted
        return deleted


class PollerThread:
    """`spool serve`'s worker on a store whose jobs travel by SQS (DynamoDB): the
    emulator's drain_due only hands due jobs to the queue there, so on its own it ran
    nothing while the banner said a worker was running. This runs what the deployed
    system runs, app.py's SQS function fed from the queue and drain_due at its rate,
    on a thread of `spool serve`'s process; the same start and stop as the Emulator."""

    def __init__(self, app: Chalice, dispatch: Any) -> None:
        self.poller = SqsPoller(app, answering_promptly(dispatch.client, 1), dispatch.queue_url)
        self.schedule = Schedule(app)
        self.queue_url = dispatch.queue_url
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def describe(self) -> str:
        fed = f"app.py {self.poller.function} fed from {self.queue_url}"
        return f"{fed}; {self.schedule.describe()}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.poller.run,
            args=(self._stop,),
            kwargs={"schedule": self.schedule},
            name="spool-sqs-poller",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop polling; the batch in hand finishes (its jobs up to their handler
        timeouts), as the Emulator's drain does, then the kept worker closes. The join
        was bounded at 30 s: `spool serve` said it was finishing its jobs, then exited
        under a longer one, which stayed `running` with its attempt spent until its
        lease lapsed. A second Ctrl-C still stops at once (serve.StopSignals)."""
        from chalicelib import events

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        events.shutdown()


def demo_default(environ: MutableMapping[str, str]) -> bool:
    """Offer the demo handlers when `spool serve` would (local/serve.py with_dev_key):
    in laptop mode, SPOOL_API_KEYS unset, unless SPOOL_DEMO_HANDLERS is set either way.
    Otherwise the API takes `echo` jobs that this worker buries as unknown types.
    Sets the variable, so the runtime this process builds offers them too."""
    if not environ.get("SPOOL_API_KEYS", "").strip() and not environ.get(DEMO_VARIABLE, "").strip():
        environ[DEMO_VARIABLE] = "true"
    return environ.get(DEMO_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")


def check_timeouts(rt: Runtime) -> None:
    """Refuse a handler the poller's invocations (900 s, as Lambda's) could never start:
    its messages were handed back until SQS dead-lettered them, its jobs never run."""
    from chalicelib.handler_check import MARGIN, never_started
    from local.cli_errors import UsageError

    limit = FUNCTION_TIMEOUT_MS / 1000
    specs = never_started(rt.registry.loaded_specs(), limit)
    if specs:
        named = ", ".join(f"{spec.type!r} (timeout={spec.timeout:g}s)" for spec in specs)
        raise UsageError(
            f"handler {named} would never run: the worker function's invocations last at "
            f"most {limit:g}s (Lambda's maximum), and a job needs its timeout plus "
            f"{MARGIN:g}s left to start",
            f"Lower the timeout to at most {limit - MARGIN:g}s",
        )


def _long_poll(text: str) -> int:
    """--wait: SQS's WaitTimeSeconds, 0 to 20. A larger one started the poller and then
    logged "store unavailable ... WaitTimeSeconds is invalid" at every receive, a usage
    mistake shown as an outage."""
    return cli_ranges.whole(
        text, 0, 20, "must be a whole number from {low} to {high} (SQS's long poll), not {text!r}"
    )


def _window(text: str) -> float:
    """--window: the event source's MaximumBatchingWindowInSeconds, 0 to 300."""
    return cli_ranges.seconds(
        text,
        0,
        300,
        "must be a number of seconds from {low} to {high} (the event source's), not {text!r}",
    )


def _seconds(text: str) -> float:
    """--idle-exit, --max-seconds: a finite time; nan or a negative one was taken."""
    return cli_ranges.seconds(
        text, 0, None, "must be a number of seconds above {low}, not {text!r}", above=True
    )


def main(argv: list[str] | None = None) -> int:
    from local.cli_errors import Parser

    # spool's parser: a usage mistake is one `spool:` line, and a value beginning
    # with '-' reaches the option's own check (argparse's: "expected one argument").
    parser = Parser(
        prog="python -m local.sqs_poller",
        description="Feed SQS messages to app.py's SQS handler, and invoke its scheduled "
        "handler at its rate, as Lambda does.",
    )
    parser.add_argument(
        "--idle-exit", type=_seconds, default=None, help="stop after N idle seconds"
    )
    parser.add_argument("--max-seconds", type=_seconds, default=None, help="stop after N seconds")
    parser.add_argument(
        "--wait", type=_long_poll, default=1, help="long-poll seconds per receive (0-20)"
    )
    parser.add_argument(
        "--window",
        type=_window,
        default=0.0,
        help="batching window seconds (0-300), as the event source's",
    )
    parser.add_argument(
        "--no-schedule",
        dest="schedule",
        action="store_false",
        help="do not invoke app.py's scheduled functions (drain_due, once a minute)",
    )
    args = parser.parse_args(argv)
    from chalicelib import logs
    from local.cli_errors import check_setting_names, report, warn_unread_settings
    from local.serve import types_loaded

    demo = demo_default(os.environ)
    try:
        check_setting_names()  # a misspelt SPOOL_* name stops it, as it stops `spool`
        warn_unread_settings()  # one too far to refuse is named, and it goes on
        # One handler, Spool's (a basicConfig beside it printed every line twice).
        logs.configure(default_level="INFO")
        import app as spool_app
        from chalicelib import runtime as runtime_module

        rt = runtime_module.current()
        check_timeouts(rt)
        from chalicelib.events import say_queues_unheeded

        say_queues_unheeded(rt)  # at start, not at the first batch
        probe = getattr(rt.store, "probe", None)
        if probe is not None:  # the endpoint and the table answer, or one line says why
            probe()
    except Exception as exc:  # a bad SPOOL_* setting, no store: one line, as `spool` prints it
        return report(exc)
    dispatch = getattr(rt.store, "dispatch", None)
    if dispatch is None:
        print(
            "spool: SPOOL_STORE_URL names no SQS queue (dynamodb://TABLE?queue=...)",
            file=sys.stderr,
        )
        rt.close()
        return 2
    poller = SqsPoller(
        spool_app.app,
        answering_promptly(dispatch.client, args.wait),
        dispatch.queue_url,
        wait_seconds=args.wait,
        batching_window=args.window,
    )
    schedule = Schedule(spool_app.app) if args.schedule else None
    stop = threading.Event()
    print(f"spool: polling {dispatch.queue_url} for {poller.function}", flush=True)
    print(
        "  scheduled  "
        + (schedule.describe() if schedule is not None else "off (--no-schedule)")
        + "\n  demo       "
        + ("echo, sleep, fail" if demo else "off")
        + f" ({DEMO_VARIABLE}={'true' if demo else 'false'})"
        # Whether SPOOL_HANDLERS was picked up, as `spool serve` and `spool worker` say.
        + f"\n  types      {types_loaded(rt.registry.types())}",
        flush=True,
    )
    # As `spool serve` and `spool worker` stop (serve.StopSignals): SIGHUP too (it was
    # left to its default, and a closed terminal killed the poller mid-batch, its jobs
    # `running` until their leases lapsed), a line on the first signal, and a second
    # Ctrl-C stops at once (it was taken as the first, and waited for the jobs).
    from local.serve import StopSignals

    with StopSignals(stop=stop.set, notice=STOPPING):
        handled = poller.run(
            stop, idle_exit=args.idle_exit, max_seconds=args.max_seconds, schedule=schedule
        )
    print(f"spool: handled {handled} message(s)", flush=True)
    rt.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
