"""chalicelib/models.py: what `make mutation` found untested.

Written to kill the mutants `make mutation MUTANTS='chalicelib.models*'` left
alive (docs/testing.md): a Job built by `trusted_job` (no validation, the stores'
hot path) must be a Job like a validated one to everything a caller may do with
a pydantic model (the memory and DynamoDB stores call model_copy on them), and
the words a store author reads when a Completion is impossible.
"""

from __future__ import annotations

import copy
import pickle
import re
from datetime import timedelta

import pytest

from chalicelib.clock import FakeClock
from chalicelib.models import Completion, Job, JobState, queued_job
from tests.factories import new_job


@pytest.fixture
def trusted(clock: FakeClock) -> Job:
    return queued_job(new_job(clock, "echo", payload={"n": 1}), clock.now(), clock.now())


def test_a_trusted_job_is_a_job_like_a_validated_one(trusted: Job) -> None:
    validated = Job.model_validate(trusted.model_dump())
    assert trusted == validated
    assert trusted.model_fields_set == validated.model_fields_set == set(Job.model_fields)
    assert trusted.model_dump(exclude_unset=True) == validated.model_dump(exclude_unset=True)
    assert trusted.model_dump_json() == validated.model_dump_json()


def test_a_trusted_job_copies_with_changes(trusted: Job) -> None:
    changed = trusted.model_copy(update={"attempts": 3, "state": JobState.RUNNING})
    assert (changed.attempts, changed.state) == (3, JobState.RUNNING)
    assert (trusted.attempts, trusted.state) == (0, JobState.QUEUED)
    assert changed.model_fields_set == set(Job.model_fields)


def test_a_trusted_job_survives_deepcopy_and_pickle(trusted: Job) -> None:
    assert copy.deepcopy(trusted) == trusted
    assert pickle.loads(pickle.dumps(trusted)) == trusted


def refused(message: str) -> pytest.RaisesExc[ValueError]:
    """A ValueError with exactly this message, not one that merely contains it."""
    return pytest.raises(ValueError, match=f"^{re.escape(message)}$")


@pytest.mark.parametrize(
    "state", [JobState.QUEUED, JobState.RUNNING, JobState.CANCELLED], ids=lambda s: s.value
)
def test_a_completion_to_a_waiting_or_cancelled_state_is_refused_saying_so(
    state: JobState,
) -> None:
    with refused(f"a completion cannot move a job to {state}"):
        Completion("j", "token", state)


def test_a_retry_without_retry_at_is_refused_saying_so(clock: FakeClock) -> None:
    with refused("a retry needs retry_at"):
        Completion("j", "token", JobState.RETRYING)
    later = clock.now() + timedelta(seconds=5)
    assert Completion("j", "token", JobState.RETRYING, retry_at=later).retry_at == later
