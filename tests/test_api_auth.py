"""API keys and tenant isolation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import app as spool_app
from chalicelib.api.auth import Keyring, hashed_entry
from chalicelib.errors import Unauthorized
from chalicelib.runtime import Runtime
from local.emulator import context, scheduled_event
from tests.apikit import KEY_A, KEY_B, Api, installed, settings_for


def test_plain_and_hashed_keys_name_their_tenants() -> None:
    ring = Keyring.parse(f"alpha-key=alpha, {hashed_entry('beta-key', 'beta')} ,")
    assert ring.tenant_for("alpha-key") == "alpha"
    assert ring.tenant_for("beta-key") == "beta"
    assert hashed_entry("beta-key", "beta").startswith("sha256:")
    assert "beta-key" not in hashed_entry("beta-key", "beta")


def test_keys_may_contain_equals_signs() -> None:
    assert Keyring.parse("abc==x=t1").tenant_for("abc==x") == "t1"


@pytest.mark.parametrize("presented", [None, "", "alpha-ke", "alpha-key ", "ALPHA-KEY", "beta"])
def test_anything_but_the_exact_key_is_refused(presented: str | None) -> None:
    with pytest.raises(Unauthorized):
        Keyring.parse("alpha-key=alpha").tenant_for(presented)


def test_no_keys_configured_refuses_everyone() -> None:
    ring = Keyring.parse("")
    assert not ring
    with pytest.raises(Unauthorized):
        ring.tenant_for("anything")


@pytest.mark.parametrize(
    "spec",
    ["no-tenant", "=tenant", "key=", "key=bad tenant", "sha256:abc=t", "sha256:" + "g" * 64 + "=t"],
)
def test_malformed_key_config_is_refused_loudly(spec: str) -> None:
    with pytest.raises(ValueError):
        Keyring.parse(spec)


def test_comparison_uses_hmac_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    from chalicelib.api import auth

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    ring = Keyring.parse("k1=t1,k2=t2,k3=t3")
    assert ring.tenant_for("k1") == "t1"
    assert len(calls) == 3  # every entry is compared, even after the match


@pytest.fixture
def rt(tmp_path) -> Iterator[Runtime]:
    keys = f"{KEY_A}=tenant-a,{hashed_entry(KEY_B, 'tenant-b')}"
    with installed(settings_for(tmp_path, api_keys=keys)) as runtime:
        yield runtime


def test_hashed_key_works_over_http(api: Api, rt: Runtime) -> None:
    job_id = api.enqueue({"type": "echo"}, key=KEY_B)
    job = rt.store.get(job_id)
    assert job is not None and job.tenant == "tenant-b"


def test_a_tenant_sees_lists_cancels_and_redrives_only_its_own_jobs(api: Api, rt: Runtime) -> None:
    mine = api.enqueue({"type": "echo", "delay": 60})
    theirs = api.enqueue({"type": "echo", "delay": 60}, key=KEY_B)
    dead_theirs = api.enqueue(
        {"type": "fail", "payload": {"always": True}, "max_attempts": 1}, key=KEY_B
    )
    spool_app.app.handler_map["drain_due"](scheduled_event(spool_app.app), context("drain_due"))

    assert [j["id"] for j in api.get("/jobs").json["jobs"]] == [mine]
    assert {j["id"] for j in api.get("/jobs", key=KEY_B).json["jobs"]} == {theirs, dead_theirs}
    assert api.get("/dlq").json["jobs"] == []
    assert api.post("/dlq/redrive").json == {"redriven": 0, "ids": []}
    assert api.post(f"/dlq/{dead_theirs}/redrive").status == 404
    assert api.post(f"/jobs/{theirs}/cancel").status == 404
    assert api.get(f"/status/{theirs}").status == 404

    job = rt.store.get(theirs)
    assert job is not None and job.state == "queued"
    dead = rt.store.get(dead_theirs)
    assert dead is not None and dead.state == "dead"
    assert api.post(f"/dlq/{dead_theirs}/redrive", key=KEY_B).status == 200
