"""Output bombs: a tiny source may not ask for huge outputs, one by one or in all.

Through the real HTTP path and worker: what the payload shows is refused at
enqueue (422, nothing stored); what depends on the source's shape is refused
when the job runs, from the header, before decoding (dead on the first attempt,
nothing written).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import app as spool_app
from chalicelib.blobs import LocalBlobStore
from chalicelib.builtin.image_limits import LimitExceeded, Limits
from chalicelib.ids import new_job_id
from chalicelib.models import JobQuery, JobState, NewJob
from chalicelib.runtime import Runtime
from local.emulator import context, scheduled_event
from tests.apikit import TENANT_A, Api


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height), 128).save(out, "PNG", optimize=True)
    return out.getvalue()


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalBlobStore:
    monkeypatch.setenv("SPOOL_BLOB_DIR", str(tmp_path / "blobs"))
    store = LocalBlobStore(tmp_path / "blobs")
    store.put("tenant-a/dot.png", png(1, 1))
    store.put("tenant-a/skinny.png", png(1, 100))
    store.put("tenant-a/square.png", png(100, 100))
    return store


def drain() -> None:
    spool_app.app.handler_map["drain_due"](scheduled_event(spool_app.app), context("drain_due"))


def resize_job(**payload: Any) -> dict[str, Any]:
    return {"type": "resize_image", "payload": payload}


def run_to_end(api: Api, rt: Runtime, job: dict[str, Any]) -> Any:
    job_id = api.enqueue(job)
    drain()
    done = rt.store.get(job_id)
    assert done is not None and done.terminal
    return done


def written(folder: LocalBlobStore) -> list[str]:
    resized = folder.root / "tenant-a" / "resized"
    return sorted(str(p.relative_to(resized)) for p in resized.rglob("*") if p.is_file())


def test_the_reported_bomb_dies_before_decoding(
    api: Api, rt: Runtime, folder: LocalBlobStore
) -> None:
    """A 1x1 PNG (under 100 bytes) asking for a 10000-wide upscale: 100 megapixels."""
    assert len(folder.get("tenant-a/dot.png")) < 100
    job = run_to_end(api, rt, resize_job(key="tenant-a/dot.png", widths=[10000], upscale=True))
    assert job.state is JobState.DEAD and job.attempts == 1
    assert "output 10000x10000 would be 100000000 pixels" in (job.last_error or "")
    assert "SPOOL_IMAGE_MAX_OUTPUT_PIXELS" in (job.last_error or "")
    assert written(folder) == []


def test_each_output_is_held_to_the_per_output_limit(
    api: Api, rt: Runtime, folder: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOOL_IMAGE_MAX_OUTPUT_PIXELS", "1000000")
    job = run_to_end(api, rt, resize_job(key="tenant-a/dot.png", widths=[2000], upscale=True))
    assert job.state is JobState.DEAD and job.attempts == 1
    assert "over the per-output limit of 1000000" in (job.last_error or "")
    assert written(folder) == []
    ok = run_to_end(api, rt, resize_job(key="tenant-a/dot.png", widths=[1000], upscale=True))
    assert ok.state is JobState.SUCCEEDED, ok.last_error
    assert written(folder) == ["dot/1000x1000.png"]


def test_a_width_alone_on_a_skinny_source_is_caught_from_the_real_shape(
    api: Api, rt: Runtime, folder: LocalBlobStore
) -> None:
    """1x100 scaled to width 1000 is 1000x100000: unknowable until the header is read."""
    job = run_to_end(api, rt, resize_job(key="tenant-a/skinny.png", widths=[1000], upscale=True))
    assert job.state is JobState.DEAD and job.attempts == 1
    assert "output 1000x100000 would be 100000000 pixels" in (job.last_error or "")
    assert written(folder) == []


def test_the_outputs_of_a_job_together_are_held_to_the_total(
    api: Api, rt: Runtime, folder: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOOL_IMAGE_MAX_TOTAL_PIXELS", "25000")
    # Not upscaled: 100x100 + 90x90 + 80x80 = 24500 fits; adding 70x70 does not.
    fits = run_to_end(api, rt, resize_job(key="tenant-a/square.png", widths=[100, 90, 80]))
    assert fits.state is JobState.SUCCEEDED, fits.last_error
    over = run_to_end(
        api, rt, resize_job(key="tenant-a/square.png", widths=[100, 90, 80, 70], format="webp")
    )
    assert over.state is JobState.DEAD and over.attempts == 1
    assert "29400 pixels in all, over the per-job limit of 25000" in (over.last_error or "")
    assert not any(name.endswith(".webp") for name in written(folder))


def test_duplicate_sizes_count_once(
    api: Api, rt: Runtime, folder: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOOL_IMAGE_MAX_TOTAL_PIXELS", "10000")
    job = run_to_end(
        api,
        rt,
        resize_job(key="tenant-a/square.png", widths=[100, 200, 100], sizes=[{"width": 100}]),
    )
    assert job.state is JobState.SUCCEEDED, job.last_error  # every entry is 100x100


@pytest.mark.parametrize(
    ("payload", "env", "message"),
    [
        (
            {"sizes": [{"width": 10000, "height": 10000}], "upscale": True},
            {},
            "allows 100000000 pixels, over the per-output limit",
        ),
        (
            {"sizes": [{"width": 5000, "height": 5000}] * 2 + [{"width": 5000, "height": 4999}]},
            {},
            None,  # no upscale: outputs never exceed the source, which has its own limit
        ),
        (
            {
                "sizes": [
                    {"width": 6000, "height": 6000},
                    {"width": 5000, "height": 6000},
                    {"width": 6000, "height": 5000},
                    {"width": 5500, "height": 6000},
                ],
                "upscale": True,
                "fit": "cover",
            },
            {},
            "allow 129000000 pixels in all, over the per-job limit of 100000000",
        ),
        (
            {"sizes": [{"width": 6000, "height": 6000}], "upscale": True},
            {"SPOOL_IMAGE_MAX_TOTAL_PIXELS": "30000000"},
            "over the per-job limit of 30000000",
        ),
        ({"widths": [1, 2, 3]}, {"SPOOL_IMAGE_MAX_OUTPUTS": "2"}, "at most 2 per job"),
        ({"widths": [1]}, {"SPOOL_IMAGE_MAX_OUTPUT_PIXELS": "lots"}, "misconfigured"),
    ],
    ids=[
        "box-over-output",
        "no-upscale-ok",
        "boxes-over-total",
        "total-setting",
        "count",
        "bad-setting",
    ],
)
def test_what_the_payload_shows_is_refused_at_enqueue(
    api: Api,
    rt: Runtime,
    folder: LocalBlobStore,
    monkeypatch: pytest.MonkeyPatch,
    payload: dict[str, Any],
    env: dict[str, str],
    message: str | None,
) -> None:
    monkeypatch.setenv("SPOOL_IMAGE_MAX_TOTAL_PIXELS", "100000000")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reply = api.post("/enqueue", resize_job(key="tenant-a/dot.png", **payload))
    if message is None:
        assert reply.status == 201, reply.body
        return
    if message == "misconfigured":  # a setting no payload mends: the server's (stop 46)
        assert reply.status == 503, reply.body
        assert reply.error_code == "misconfigured"
    else:
        assert reply.status == 422, reply.body
        assert reply.error_code == "validation_error"
    assert message in reply.json["error"]["message"]
    assert rt.store.list_jobs(JobQuery()).jobs == []


def test_a_stored_job_over_the_limits_dies_without_decoding(
    rt: Runtime, folder: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs stored before the limits (or by a path without admission) meet them at run time."""
    monkeypatch.setenv("SPOOL_IMAGE_MAX_OUTPUTS", "2")
    payloads: list[dict[str, Any]] = [
        {"key": "tenant-a/dot.png", "sizes": [{"width": 10000, "height": 10000}], "upscale": True},
        {"key": "tenant-a/square.png", "widths": [10, 20, 30]},
    ]
    now = rt.store.clock.now()
    jobs = [NewJob(new_job_id(), "resize_image", p, now, tenant=TENANT_A) for p in payloads]
    rt.store.add(jobs)
    drain()
    for new, reason in zip(jobs, ["per-output limit", "at most 2 per job"], strict=True):
        job = rt.store.get(new.id)
        assert job is not None and job.state is JobState.DEAD and job.attempts == 1
        assert reason in (job.last_error or "")
    assert written(folder) == []


def test_limits_allow_exactly_their_values() -> None:
    limits = Limits(max_output_pixels=100, max_total_pixels=150, max_outputs=2)
    limits.check_outputs([(10, 10), (5, 10)])
    limits.check_request([(10, 10), (5, 10)], upscale=True)
    with pytest.raises(LimitExceeded, match="per-output"):
        limits.check_outputs([(101, 1)])
    with pytest.raises(LimitExceeded, match="per-job"):
        limits.check_outputs([(10, 10), (51, 1)])
    with pytest.raises(LimitExceeded, match="at most 2"):
        limits.check_outputs([(1, 1), (1, 2), (1, 3)])
    with pytest.raises(LimitExceeded, match="at most 2"):
        limits.check_request([(1, None)] * 3, upscale=False)
