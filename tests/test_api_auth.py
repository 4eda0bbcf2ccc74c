"""API keys and tenant isolation."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

import app as spool_app
from chalicelib.api.auth import (
    Forbidden,
    Keyring,
    authorize_metrics,
    hashed_entry,
    operator_keys,
)
from chalicelib.config import Settings
from chalicelib.errors import SpoolError, Unauthorized
from chalicelib.runtime import Runtime
from local.emulator import context, scheduled_event
from tests.apikit import KEY_A, KEY_B, Api, installed, settings_for

# Keys of the minimum length (chalicelib.api.auth.MIN_KEY_LENGTH) and more.
K1, K2, K3 = "key-1-0123456789", "key-2-0123456789", "key-3-0123456789"
SAME = "same-key-0123456789"


def test_plain_and_hashed_keys_name_their_tenants() -> None:
    ring = Keyring.parse(f"alpha-key-0123456=alpha, {hashed_entry('beta-key-01234567', 'beta')} ,")
    assert ring.tenant_for("alpha-key-0123456") == "alpha"
    assert ring.tenant_for("beta-key-01234567") == "beta"
    assert hashed_entry("beta-key-01234567", "beta").startswith("sha256:")
    assert "beta-key-01234567" not in hashed_entry("beta-key-01234567", "beta")


def test_keys_may_contain_equals_signs() -> None:
    assert Keyring.parse("abc==x-0123456789=t1").tenant_for("abc==x-0123456789") == "t1"


@pytest.mark.parametrize(
    "presented", [None, "", "alpha-ke", "alpha-key-0123456 ", "ALPHA-KEY-0123456", "beta"]
)
def test_anything_but_the_exact_key_is_refused(presented: str | None) -> None:
    with pytest.raises(Unauthorized):
        Keyring.parse("alpha-key-0123456=alpha").tenant_for(presented)


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

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("chalicelib.api.auth.hmac.compare_digest", spy)
    ring = Keyring.parse(f"{K1}=t1,{K2}=t2,{K3}=t3")
    assert ring.tenant_for(K1) == "t1"
    assert len(calls) == 3  # every entry is compared, even after the match


@pytest.fixture
def rt(tmp_path) -> Iterator[Runtime]:
    keys = f"{KEY_A}=tenant-a,{hashed_entry(KEY_B, 'tenant-b')}"
    demo = ("chalicelib.builtin.demo",)  # echo and fail, whichever handlers are on by default
    with installed(settings_for(tmp_path, api_keys=keys, handlers=demo)) as runtime:
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
    redrove = api.post("/dlq/redrive").json
    assert (redrove["redriven"], redrove["ids"]) == (0, [])
    assert api.post(f"/dlq/{dead_theirs}/redrive").status == 404
    assert api.post(f"/jobs/{theirs}/cancel").status == 404
    assert api.get(f"/status/{theirs}").status == 404

    job = rt.store.get(theirs)
    assert job is not None and job.state == "queued"
    dead = rt.store.get(dead_theirs)
    assert dead is not None and dead.state == "dead"
    assert api.post(f"/dlq/{dead_theirs}/redrive", key=KEY_B).status == 200


# -- the forms a key may take in the config ------------------------------------

DIGEST = hashed_entry("beta-key-01234567", "beta").split("=")[0].removeprefix("sha256:")


@pytest.mark.parametrize(
    "entry",
    [
        f"sha256:{DIGEST.upper()}=beta",
        f"SHA256:{DIGEST}=beta",
        f"Sha256:{DIGEST.upper()}=beta",
        f"  sha256:{DIGEST} = beta ",
    ],
)
def test_a_digest_works_in_any_letter_case(entry: str) -> None:
    ring = Keyring.parse(entry)
    assert ring.tenant_for("beta-key-01234567") == "beta"
    # Read as a plain key, the digest itself would open the door to anyone who reads the config.
    for literal in (entry.split("=")[0].strip(), f"sha256:{DIGEST}"):
        with pytest.raises(Unauthorized):
            ring.tenant_for(literal)


def test_whitespace_around_key_and_tenant_is_not_part_of_them() -> None:
    ring = Keyring.parse(" alpha-key-0123456 = alpha ,\tbeta-key-01234567=beta\n")
    assert ring.tenant_for("alpha-key-0123456") == "alpha"
    assert ring.tenant_for("beta-key-01234567") == "beta"


@pytest.mark.parametrize("key", ["two words", "tab\there", "cl\u00e9", "nul\x00", "del\x7f"])
def test_a_key_no_header_can_carry_is_refused_without_echoing_it(key: str) -> None:
    with pytest.raises(ValueError, match="alpha") as raised:
        Keyring.parse(f"{key}=alpha")
    assert key not in str(raised.value)
    assert "SPOOL_API_KEYS" in str(raised.value)


@pytest.mark.parametrize(
    "spec",
    [
        f"{SAME}=alpha,{SAME}=beta",
        f"{SAME}=alpha,{hashed_entry(SAME, 'beta')}",
        f"{hashed_entry(SAME, 'alpha')},SHA256:{hashed_entry(SAME, 'x')[7:71]}=beta",
    ],
)
def test_one_key_for_two_tenants_is_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="alpha and to beta") as raised:
        Keyring.parse(spec)
    assert SAME not in str(raised.value)


def test_one_key_listed_twice_for_the_same_tenant_is_one_entry() -> None:
    ring = Keyring.parse(f"{K1}=alpha,{hashed_entry(K1, 'alpha')},{K1}=alpha")
    assert ring.tenant_for(K1) == "alpha" and len(ring.entries) == 1


@pytest.mark.parametrize("tenant", ["a", "A.b:c-d_e", "t" * 64])
def test_tenant_names_within_the_pattern_are_kept_exactly(tenant: str) -> None:
    assert Keyring.parse(f"{K1}={tenant}").tenant_for(K1) == tenant


@pytest.mark.parametrize("tenant", ["t" * 65, "a/b", "a b", "caf\u00e9", "a\nb"])
def test_tenant_names_outside_the_pattern_are_refused(tenant: str) -> None:
    with pytest.raises(ValueError, match="key=tenant"):
        Keyring.parse(f"{K1}={tenant}")


def test_the_last_entry_matches_and_all_are_compared(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr("chalicelib.api.auth.hmac.compare_digest", spy)
    ring = Keyring.parse(f"{K1}=t1,{K2}=t2,{K3}=t3")
    assert ring.tenant_for(K3) == "t3"
    with pytest.raises(Unauthorized):
        ring.tenant_for(K1 + "4")
    assert len(compared) == 6
    # Digests are compared, never the key text (whose length would leak through timing).
    assert all(len(a) == len(b) == 32 for a, b in compared)


# -- what a refusal says ------------------------------------------------------------


@pytest.mark.parametrize("presented", [None, ""])
def test_a_missing_key_is_told_where_the_key_goes(presented: str | None) -> None:
    with pytest.raises(Unauthorized, match="X-API-Key header"):
        Keyring.parse(f"{K1}=t").tenant_for(presented)


@pytest.mark.parametrize("presented", ["wrong", "\udc80", "\x00"])
def test_a_wrong_key_is_invalid_never_a_crash(presented: str) -> None:
    with pytest.raises(Unauthorized, match=r"^invalid API key: send one of this server's API keys"):
        Keyring.parse(f"{K1}=t").tenant_for(presented)


@pytest.mark.parametrize("presented", [None, "", "some-key"])
def test_a_server_without_keys_says_how_to_set_one(presented: str | None) -> None:
    with pytest.raises(Unauthorized) as raised:
        Keyring.parse(" , ").tenant_for(presented)
    message = raised.value.message
    for hint in ("SPOOL_API_KEYS", "key=tenant", ".chalice/config.json", "spool serve"):
        assert hint in message


def test_the_hint_reaches_the_client_of_a_server_without_keys(tmp_path) -> None:
    from chalice.test import Client

    from tests.apikit import Api

    with (
        installed(settings_for(tmp_path, api_keys="")),
        Client(spool_app.app, stage_name="local") as client,
    ):
        reply = Api(client).get("/jobs")
    assert reply.status == 401 and reply.error_code == "unauthorized"
    assert "SPOOL_API_KEYS" in reply.json["error"]["message"]
    assert reply.header("WWW-Authenticate") == 'ApiKey header="X-API-Key"'


# -- /metrics: operator keys ---------------------------------------------------------

OPERATOR_KEY = "ops-key-5555555555"


def metrics_settings(**extra: str) -> Settings:
    return Settings(api_keys=f"{KEY_A}=tenant-a,{KEY_B}=tenant-b", extra=extra)


def refusal(
    settings: Settings, presented: str | None, header: str = "x-api-key"
) -> SpoolError | None:
    """What authorize_metrics says to a request sending `presented` in `header`."""
    headers = {} if presented is None else {header: presented}
    try:
        authorize_metrics(settings, Keyring.parse(settings.api_keys), headers.get)
    except SpoolError as exc:
        return exc
    return None


@pytest.mark.parametrize(
    "operators",
    [
        f"{OPERATOR_KEY}=prometheus",
        hashed_entry(OPERATOR_KEY, "prometheus"),
        OPERATOR_KEY,  # the name is optional for operator keys
        hashed_entry(OPERATOR_KEY, "x").removesuffix("=x").upper(),
        f"other-key-0123456789, {OPERATOR_KEY} ,",
    ],
)
def test_metrics_opens_to_an_operator_key_plain_or_hashed(operators: str) -> None:
    settings = metrics_settings(SPOOL_METRICS_KEYS=operators)
    assert refusal(settings, OPERATOR_KEY) is None
    assert refusal(settings, f"Bearer {OPERATOR_KEY}", "authorization") is None  # Prometheus
    assert refusal(settings, f"bearer  {OPERATOR_KEY} ", "authorization") is None


@pytest.mark.parametrize("sent", [f"Basic {OPERATOR_KEY}", OPERATOR_KEY, "Bearer", "Bearer  "])
def test_metrics_reads_only_a_bearer_token_from_authorization(sent: str) -> None:
    refused = refusal(metrics_settings(SPOOL_METRICS_KEYS=OPERATOR_KEY), sent, "authorization")
    assert isinstance(refused, Unauthorized) and refused.message.startswith("missing API key")


def test_an_operator_key_holding_equals_signs_needs_its_name() -> None:
    assert operator_keys("abcdefghijklmno===ops").match("abcdefghijklmno==") == "ops"
    with pytest.raises(ValueError, match="key=name"):
        operator_keys("abcdefghijklmno==")


def test_metrics_refuses_a_tenant_key_with_403_saying_what_it_needs() -> None:
    settings = metrics_settings(SPOOL_METRICS_KEYS=f"{OPERATOR_KEY}=ops")
    for refused in (
        refusal(settings, KEY_B),
        refusal(settings, f"Bearer {KEY_A}", "authorization"),
    ):
        assert isinstance(refused, Forbidden) and refused.status == 403
        assert "operator key" in refused.message and "SPOOL_METRICS_KEYS" in refused.message


@pytest.mark.parametrize("operators", ["", f"{OPERATOR_KEY}=ops"])
@pytest.mark.parametrize("presented", [None, "", "nobody's-key", OPERATOR_KEY + "x"])
def test_metrics_refuses_no_key_and_unknown_keys_with_401(
    operators: str, presented: str | None
) -> None:
    refused = refusal(metrics_settings(SPOOL_METRICS_KEYS=operators), presented)
    assert isinstance(refused, Unauthorized)
    assert "SPOOL_METRICS_KEYS" in refused.message


def test_metrics_without_operator_keys_says_how_to_open_it() -> None:
    refused = refusal(metrics_settings(), KEY_A)
    assert isinstance(refused, Forbidden)
    assert "none is configured" in refused.message
    assert "SPOOL_METRICS_PUBLIC=true" in refused.message


def test_metrics_public_needs_no_key_and_a_shared_key_opens_both() -> None:
    public = dataclasses.replace(metrics_settings(), metrics_public=True)
    assert refusal(public, None) is None and refusal(public, "anything") is None
    # A single-tenant deployment may list its one key in both.
    shared = metrics_settings(SPOOL_METRICS_KEYS=f"{KEY_A}=ops")
    assert refusal(shared, KEY_A) is None
    assert isinstance(refusal(shared, KEY_B), Forbidden)


def test_malformed_operator_keys_are_refused_naming_their_setting() -> None:
    with pytest.raises(ValueError, match="SPOOL_METRICS_KEYS"):
        refusal(metrics_settings(SPOOL_METRICS_KEYS="sha256:abc=ops"), OPERATOR_KEY)
