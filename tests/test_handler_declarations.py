"""Every argument of @handler, of @periodic and of the settings that override them is
checked where it is written: a declaration no job could run under stops the import
(or `spool worker`/`spool serve`) with one line naming the handler (or schedule, or
setting) and the argument, instead of failing later, job by job.

Found by trying nonsense: backoff=(600, 5) (base above cap) was accepted and every
retry waited the cap; backoff=5, "1s" or a triple was kept as the policy and the
worker failed on the first retry; backoff=(1,) raised a bare IndexError; a bad
concurrency or rate did not say which handler it belonged to; @periodic took any
queue, priority and max_attempts, found only when its first tick was refused;
SPOOL_LIMITS took a queue name no job can have; SPOOL_WEBHOOK_BACKOFF above
SPOOL_WEBHOOK_BACKOFF_MAX was kept.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from chalicelib.config import ConfigError, Settings
from chalicelib.handlers import Registry
from chalicelib.limit_settings import LIMITS, validate
from chalicelib.limits import Rate
from chalicelib.periodic import ScheduleBook
from chalicelib.retry import RetryPolicy
from chalicelib.webhooks.config import from_settings
from local import cli


def declared(**arguments: Any) -> str:
    """The refusal of @handler("send_report", **arguments), after checking its shape."""
    with pytest.raises(ValueError) as caught:
        Registry().handler("send_report", **arguments)(lambda payload: None)
    message = str(caught.value)
    assert message.startswith("handler 'send_report': "), message
    assert "\n" not in message and len(message) < 260, message
    return message


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        ({"backoff": (600, 5)}, "backoff base 600s is more than its cap 5s"),
        ({"backoff": (600.0, 5.0), "max_attempts": 3}, "backoff base 600s is more than its cap"),
        ({"backoff": (1,)}, "backoff=(1,): a (base, cap) pair of seconds"),
        ({"backoff": (1, 2, 3)}, "backoff=(1, 2, 3): a (base, cap) pair of seconds"),
        ({"backoff": 5}, "backoff=5: a (base, cap) pair of seconds"),
        ({"backoff": "1s"}, "backoff='1s': a (base, cap) pair of seconds"),
        ({"backoff": (-1, 5)}, "backoff base must be a finite, non-negative number"),
        ({"backoff": ("1", 5)}, "backoff base must be a number of seconds, not '1'"),
        ({"max_attempts": 0}, "max_attempts must be at least 1"),
        ({"max_attempts": 101}, "max_attempts must be at most 100"),
        ({"max_attempts": "3"}, "max_attempts='3': a whole number"),
        ({"timeout": 0}, "timeout must be a positive, finite number of seconds"),
        ({"timeout": "30"}, "timeout must be a positive, finite number of seconds"),
        ({"concurrency": 0}, "concurrency=0: a whole number from 1 to 1000000"),
        ({"concurrency": 2.5}, "concurrency=2.5: a whole number from 1 to"),
        ({"concurrency": True}, "concurrency=True: a whole number from 1 to"),
        ({"concurrency": "2"}, "concurrency='2': a whole number from 1 to"),
        ({"rate": "0/s"}, "rate='0/s': a rate's count must be 1 to 10000, not 0"),
        ({"rate": "10"}, "rate: '10' is not a rate: write it as count/window"),
        (
            {"rate": "10/0s"},
            "rate='10/0s': a rate's window must be from 0.001s (1 ms) to 1d (one day)",
        ),
        ({"rate": 10}, "rate=10: a rate is text such as '10/s', not int"),
        ({"rate": "5/fortnight"}, "rate: '5/fortnight': 'fortnight' is not a duration"),
        ({"rate": "5/s", "concurrency": 0}, "concurrency=0: a whole number"),
        ({"queue": "a b"}, "queue='a b': a queue name is 1-64 of"),
        ({"queue": ""}, "queue='': a queue name is 1-64 of"),
        ({"priority": 10**6}, "priority=1000000: an integer from -1000 to 1000"),
        ({"priority": 1.5}, "priority=1.5: an integer from -1000 to 1000"),
        ({"admit": 5}, "admit=5: a function (payload, tenant)"),
        ({"payload": dict}, "payload=<class 'dict'>: a pydantic model class"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_each_nonsense_argument_of_handler_is_refused_naming_handler_and_argument(
    arguments: dict[str, Any], said: str
) -> None:
    assert said in declared(**arguments)


@pytest.mark.parametrize(
    "arguments",
    [
        {"backoff": (0, 0)},  # retry at once
        {"backoff": (5, 5)},  # a constant step
        {"backoff": [1, 60]},  # a list reads as the pair it holds
        {"backoff": RetryPolicy(max_attempts=2, base=1, cap=2)},
        {"concurrency": 1, "rate": "1/1d"},
        {"rate": Rate(3, 1.0)},
        {"queue": "q:images.v2-x_1", "priority": -1000, "max_attempts": 100},
    ],
)
def test_sensible_declarations_still_register(arguments: dict[str, Any]) -> None:
    registry = Registry()
    registry.handler("fine", **arguments)(lambda payload: None)
    assert registry.get("fine").retry.base <= registry.get("fine").retry.cap


def test_a_retry_policy_built_by_hand_refuses_a_base_above_its_cap() -> None:
    with pytest.raises(ValueError, match=r"^backoff base 600s is more than its cap 5s: "):
        RetryPolicy(base=600, cap=5)
    assert RetryPolicy(base=5, cap=5).ceiling(10) == 5.0


# -- @periodic --------------------------------------------------------------------------


def scheduled(**arguments: Any) -> str:
    registry = Registry()
    func = registry.handler("report")(lambda payload: None)
    with pytest.raises(ValueError) as caught:
        ScheduleBook().periodic("nightly", registry=registry, **arguments)(func)
    message = str(caught.value)
    assert message.startswith("schedule 'nightly': "), message
    return message


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        ({"every": "1h", "queue": "a b"}, "queue='a b': a queue name is 1-64 of"),
        ({"every": "1h", "priority": 10**6}, "priority=1000000: an integer from -1000 to 1000"),
        ({"every": "1h", "priority": 1.5}, "priority=1.5: an integer from -1000 to 1000"),
        ({"every": "1h", "max_attempts": 0}, "max_attempts=0: a whole number from 1 to 100"),
        ({"every": "1h", "max_attempts": 101}, "max_attempts=101: a whole number from 1 to 100"),
        ({"every": "1h", "max_attempts": True}, "max_attempts=True: a whole number"),
        ({"every": "1h", "payload": 5}, "payload=5: a dict of JSON values"),
        ({"every": "soon"}, "every='soon': 'soon' is not a duration"),
        ({"every": 1.5}, "every=1.5: durations are whole seconds"),
        ({"every": "1h", "catch_up": -1}, "catch_up=-1: a duration cannot be negative"),
        ({"every": "1h", "tz": "Nowhere/Town"}, "unknown time zone 'Nowhere/Town'"),
        ({"every": "1h", "tz": 5}, "tz=5: a zone name"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_each_nonsense_argument_of_periodic_is_refused_naming_schedule_and_argument(
    arguments: dict[str, Any], said: str
) -> None:
    assert said in scheduled(**arguments)


# -- the settings that override them ---------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "said"),
    [
        ('{"queue:a b": {"concurrency": 1}}', "'queue:a b': 'a b' is no queue name"),
        ('{"type:x y": {"rate": "1/s"}}', "'type:x y': 'x y' is no type name"),
        ('{"type:x": {"concurrency": 0}}', "type:x: concurrency must be a whole number"),
        ('{"type:x": {"rate": "0/s"}}', "type:x: a rate's count must be 1 to 10000"),
        ('{"type:x": {"rate": "10"}}', "type:x: '10' is not a rate"),
        ('{"queue:a b": null}', "'queue:a b': 'a b' is no queue name"),
    ],
)
def test_each_nonsense_limit_override_is_refused_naming_the_setting_and_its_entry(
    limits: str, said: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        validate(Settings.from_env({LIMITS: limits}))
    assert str(caught.value).startswith(f"{LIMITS}: ") and said in str(caught.value)


def test_a_webhook_backoff_above_its_maximum_is_refused_naming_both() -> None:
    both = {"SPOOL_WEBHOOK_BACKOFF": "600", "SPOOL_WEBHOOK_BACKOFF_MAX": "5"}
    with pytest.raises(ConfigError, match=r"^SPOOL_WEBHOOK_BACKOFF \(600\) is more than "):
        from_settings(Settings.from_env(both))
    # The maximum alone, below the default first step, is a plain ceiling on every step.
    capped = from_settings(Settings.from_env({"SPOOL_WEBHOOK_BACKOFF_MAX": "2"}))
    assert (capped.backoff_base, capped.backoff_cap) == (5.0, 2.0)
    fine = from_settings(Settings.from_env({**both, "SPOOL_WEBHOOK_BACKOFF": "5"}))
    assert (fine.backoff_base, fine.backoff_cap) == (5.0, 5.0)


def test_spool_worker_refuses_to_start_on_a_module_with_a_bad_declaration(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The refusal reaches a person as `spool`'s one line (exit 2), naming the handler
    and the argument; no store is opened for a worker that could not run its jobs."""
    (tmp_path / "bad_backoff_handlers.py").write_text(
        "from chalicelib.handlers import handler\n\n"
        "@handler('send_report', backoff=(600, 5))\n"
        "def send_report(payload):\n"
        "    return None\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SPOOL_HANDLERS", "bad_backoff_handlers")
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{tmp_path}/spool.db")
    code = cli.main(["worker", "--burst"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert re.search(r"handler 'send_report': backoff base 600s is more than its cap 5s", err)
    assert err.count("\n") == 1 and not (tmp_path / "spool.db").exists()
