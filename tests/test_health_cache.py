"""/health needs no key, so on AWS each call must not cost a DynamoDB read: a
successful store probe answers for SPOOL_HEALTH_CACHE_SECONDS (5 by default);
a failed one is never remembered."""

from __future__ import annotations

from pathlib import Path

import pytest

from chalicelib.api.http import ApiRequest
from chalicelib.api.routes import Edge
from chalicelib.errors import StoreUnavailable
from chalicelib.models import Job
from tests.apikit import installed, settings_for


class Timer:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def probe(edge: Edge) -> int:
    return edge.health(ApiRequest(headers={}, query={}, body=b"")).status


def test_health_remembers_a_good_probe_for_a_few_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with installed(settings_for(tmp_path)) as rt:
        timer = Timer()
        edge = Edge(rt, timer=timer)
        reads: list[str] = []
        real_get = rt.store.get

        def counted(job_id: str) -> Job | None:
            reads.append(job_id)
            return real_get(job_id)

        monkeypatch.setattr(rt.store, "get", counted)
        assert [probe(edge) for _ in range(100)] == [200] * 100
        assert len(reads) == 1  # one store read, not one per call
        timer.now += 4.9
        probe(edge)
        assert len(reads) == 1
        timer.now += 0.2
        probe(edge)
        assert len(reads) == 2


def test_health_never_remembers_a_failed_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with installed(settings_for(tmp_path)) as rt:
        edge = Edge(rt, timer=Timer())
        real_get = rt.store.get

        def down(job_id: str) -> object:
            raise StoreUnavailable("the store is down")

        monkeypatch.setattr(rt.store, "get", down)
        for _ in range(3):
            with pytest.raises(StoreUnavailable):
                probe(edge)
        monkeypatch.setattr(rt.store, "get", real_get)
        assert probe(edge) == 200


def test_health_cache_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(tmp_path, extra={"SPOOL_HEALTH_CACHE_SECONDS": "0"})
    with installed(settings) as rt:
        edge = Edge(rt, timer=Timer())
        reads: list[str] = []
        real_get = rt.store.get

        def counted(job_id: str) -> Job | None:
            reads.append(job_id)
            return real_get(job_id)

        monkeypatch.setattr(rt.store, "get", counted)
        for _ in range(3):
            probe(edge)
        assert len(reads) == 3


def test_a_write_the_store_knows_it_cannot_take_shows_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read probe is remembered; what the process already knows of its writes is
    not: cached with the read, a refused write stayed hidden for up to 5 s."""
    with installed(settings_for(tmp_path)) as rt:
        edge = Edge(rt, timer=Timer())
        assert probe(edge) == 200

        def full() -> None:
            raise StoreUnavailable("the disk holding the SQLite database is full")

        monkeypatch.setattr(rt.store, "check_writable", full)
        with pytest.raises(StoreUnavailable):
            probe(edge)  # within the remembered read's 5 s
