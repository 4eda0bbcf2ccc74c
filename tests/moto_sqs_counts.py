"""moto's SQS queue counts, read with one clock reading each instead of two per message.

moto (5.2) builds a queue's whole attribute dict on every SendMessage (to read
ContentBasedDeduplication), and three of its attributes (ApproximateNumberOfMessages,
...NotVisible, ...Delayed) walk every message in the queue, each message reading the
clock twice through `unix_time_millis` (a datetime built and converted each time).
Sending n messages to a queue nobody drains was so quadratic: the 1,105 sends of a
DynamoDB contract test with a run of 1,100 held jobs spent 15 of their 26 s there
(cProfile). Real SQS keeps no such cost, and nothing a test asks of moto depends on it.

Installed (tests/conftest.py once a test has loaded moto's SQS, tests/backends.py for
the in-process moto), each count reads the clock once, through the same module name
(so a test that moves moto's SQS clock, bench/held_backlog.py's, still moves it), and
compares each message's `visible_at` and `delayed_until` as moto's `visible` and
`delayed` do: the same counts at one instant, as tests/test_moto_sqs_counts.py checks.
"""

from __future__ import annotations

from typing import Any

_INSTALLED = False


def _now() -> float:
    from moto.sqs import models

    return float(getattr(models, "unix_time_millis")())  # noqa: B009 - not exported, so not typed


def delayed(queue: Any) -> int:
    """Message.delayed: `now < delayed_until`."""
    now = _now()
    return sum(1 for m in queue._messages if now < m.delayed_until)


def not_visible(queue: Any) -> int:
    """not Message.visible: `not now > visible_at`."""
    now = _now()
    return sum(1 for m in queue._messages if not now > m.visible_at)


def available(queue: Any) -> int:
    """len(Queue.messages): visible and not delayed."""
    now = _now()
    return sum(1 for m in queue._messages if now > m.visible_at and not now < m.delayed_until)


def install() -> None:
    """Patch moto's SQS Queue (once a process)."""
    global _INSTALLED
    if _INSTALLED:
        return
    from moto.sqs.models import Queue

    Queue.approximate_number_of_messages_delayed = property(delayed)  # type: ignore[assignment,method-assign]
    Queue.approximate_number_of_messages_not_visible = property(not_visible)  # type: ignore[assignment,method-assign]
    Queue.approximate_number_of_messages = property(available)  # type: ignore[assignment,method-assign]
    _INSTALLED = True
