"""An idempotency key holding a line separator or an invisible format character is
refused, through every way in (stop 61, helper E).

Was: client_text refused Unicode Cc and lone surrogates only, so POST /enqueue
stored a key holding U+2028 or U+2029 (a line break to JavaScript, to many editors
and log viewers), a bidi override or isolate (U+202E, U+2067: the dashboard row or
the terminal shows the rest of the line reversed), or U+200B, U+FEFF, U+2060 (two
keys that look the same are different jobs). `spool serve` answered 201 to each.
Now Zl, Zp and Cf (but U+200C and U+200D, the joiners scripts and emoji need) are
refused as control characters are: a 422 at the field's loc naming the code point,
for one job and a batch (none of it stored), on the Lambda path too; the Python
client's and the async client's ValueError with nothing sent; `spool enqueue`'s
usage error (exit 2) on the local store and through a server.

The type, queue and tenant names are ASCII by their pattern, and a callback URL is
refused whole for these characters (ssrf.parse_url): checked here as well, so the
rule is one over every client text Spool stores and shows.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from chalicelib import client_text, ssrf
from chalicelib.models import JobQuery
from chalicelib.runtime import Runtime
from local.server import Server
from spool_client import AsyncClient, Client, JobSpec
from tests import test_s57a_cli_sdk_key_text, test_s57a_key_control_characters
from tests.apikit import KEY_A, Api
from tests.served import post

# The control-character tests' served fixture and helpers, which this file extends.
server = test_s57a_cli_sdk_key_text.server
FAST = test_s57a_cli_sdk_key_text.FAST
jobs_on = test_s57a_cli_sdk_key_text.jobs_on
spool = test_s57a_cli_sdk_key_text.spool
get = test_s57a_key_control_characters.get

REFUSED = {
    "line-separator": ("\u2028", "line_separator"),
    "paragraph-separator": ("\u2029", "line_separator"),
    "rtl-override": ("\u202e", "format_character"),
    "lre": ("\u202a", "format_character"),
    "rli-isolate": ("\u2067", "format_character"),
    "pop-isolate": ("\u2069", "format_character"),
    "rlm": ("\u200f", "format_character"),
    "zero-width-space": ("\u200b", "format_character"),
    "bom": ("\ufeff", "format_character"),
    "word-joiner": ("\u2060", "format_character"),
    "soft-hyphen": ("\u00ad", "format_character"),
    "tag-character": ("\U000e0041", "format_character"),
}
# Cf, and text all the same: a family emoji (ZWJ sequence), Persian with a ZWNJ.
JOINED = ["\U0001f468\u200d\U0001f469\u200d\U0001f467", "\u0645\u06cc\u200c\u0631\u0648\u0645"]


def said(bad: str) -> str:
    """How a refusal names `bad`: its kind and its code point, never the character."""
    kind = "a line separator" if bad in "\u2028\u2029" else "an invisible format character"
    return f"{kind}, U+{ord(bad):04X}"


def enqueue(server: Server, body: Any) -> tuple[int, dict[str, Any]]:
    return post(server, "/enqueue", json.dumps(body).encode())


def refusal_of(problem: list[Any], loc: list[Any], bad: str) -> None:
    [error] = problem
    assert error["loc"] == loc
    kind = "line_separator" if bad in "\u2028\u2029" else "format_character"
    assert error["type"] == kind
    assert error["msg"].startswith(f"the idempotency key holds {said(bad)}, at index ")
    assert bad not in error["msg"]


@pytest.mark.parametrize("bad", [b for b, _ in REFUSED.values()], ids=REFUSED.keys())
def test_one_job_whose_key_holds_it_is_refused(server: Server, bad: str) -> None:
    """Sent as the JSON escape a client writes ("\\u2028"), as json.dumps does."""
    status, answer = enqueue(server, {"type": "echo", "idempotency_key": f"order{bad}7"})
    assert status == 422, answer
    refusal_of(answer["error"]["details"], ["idempotency_key"], bad)
    assert jobs_on(server) == []


@pytest.mark.parametrize("bad", ["\u2028", "\u202e", "\ufeff"])
def test_raw_utf8_in_the_body_is_refused_alike(server: Server, bad: str) -> None:
    body = json.dumps({"type": "echo", "idempotency_key": f"k{bad}"}, ensure_ascii=False)
    status, answer = post(server, "/enqueue", body.encode())
    assert status == 422, answer
    refusal_of(answer["error"]["details"], ["idempotency_key"], bad)


@pytest.mark.parametrize("bad", ["\u2029", "\u2066", "\u200b"])
def test_a_batch_with_one_such_key_stores_none_of_its_jobs(server: Server, bad: str) -> None:
    jobs: list[dict[str, Any]] = [
        {"type": "echo", "payload": {"n": n}, "idempotency_key": f"k-{n}"} for n in range(3)
    ]
    jobs[1]["idempotency_key"] = f"k{bad}"
    status, answer = enqueue(server, {"jobs": jobs})
    assert status == 422, answer
    [problem] = answer["error"]["details"]
    assert problem["index"] == 1
    refusal_of(problem["details"], ["jobs", 1, "idempotency_key"], bad)
    assert jobs_on(server) == []


@pytest.mark.parametrize("key", JOINED)
def test_the_joiners_are_text(server: Server, key: str) -> None:
    status, answer = enqueue(server, {"type": "echo", "idempotency_key": key})
    assert status == 201, answer
    status, job = get(server, f"/status/{answer['id']}")
    assert status == 200 and job["idempotency_key"] == key


def test_the_lambda_path_refuses_it_alike(api: Api, rt: Runtime) -> None:
    reply = api.post("/enqueue", {"type": "echo", "idempotency_key": "a\u2028b"})
    assert reply.status == 422, reply.body
    refusal_of(reply.json["error"]["details"], ["idempotency_key"], "\u2028")
    batch = [
        {"type": "echo", "idempotency_key": "ok"},
        {"type": "echo", "idempotency_key": "\u202e"},
    ]
    reply = api.post("/enqueue", {"jobs": batch})
    assert reply.status == 422, reply.body
    [problem] = reply.json["error"]["details"]
    refusal_of(problem["details"], ["jobs", 1, "idempotency_key"], "\u202e")
    assert rt.store.list_jobs(JobQuery()).jobs == []


@pytest.mark.parametrize("bad", ["\u2028", "\u202e", "\u2067", "\ufeff"])
def test_the_client_refuses_it_and_sends_nothing(server: Server, bad: str) -> None:
    with Client(server.url, KEY_A, retry=FAST) as client:
        refused = "^idempotency_key holds " + re.escape(said(bad))
        with pytest.raises(ValueError, match=refused + ", at"):
            client.enqueue("echo", {}, idempotency_key=f"k{bad}")
        jobs: list[Any] = [JobSpec("echo", {"n": n}, idempotency_key=f"k-{n}") for n in range(2)]
        jobs.append({"type": "echo", "idempotency_key": bad})
        with pytest.raises(ValueError, match=refused):
            client.enqueue_many(jobs, batch_size=1)
    assert jobs_on(server) == []


def test_the_async_client_refuses_it_too(server: Server) -> None:
    async def scenario() -> None:
        async with AsyncClient(server.url, KEY_A, retry=FAST) as client:
            await client.enqueue("echo", {}, idempotency_key="order\u20297")

    with pytest.raises(ValueError, match=r"idempotency_key holds a line separator, U\+2029"):
        asyncio.run(scenario())
    assert jobs_on(server) == []


@pytest.mark.parametrize("bad", ["\u2028", "\u202e", "\u200b"])
def test_spool_enqueue_refuses_it_on_the_local_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    db = tmp_path / "spool.db"
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("SPOOL_DEMO_HANDLERS", "true")
    for name in ("SPOOL_URL", "SPOOL_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    code, out, err = spool(capsys, "enqueue", "echo", "--idempotency-key", f"k{bad}")
    assert (code, out) == (2, "")
    assert "--idempotency-key" in err and said(bad) in err
    assert bad not in err
    assert not db.exists()


def test_spool_enqueue_refuses_it_through_a_server(
    server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("SPOOL_URL", "SPOOL_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    argv = ("enqueue", "echo", "--idempotency-key", "a\u2066b", "--url", server.url)
    code, out, err = spool(capsys, *argv, "--key", KEY_A)
    assert (code, out) == (2, "")
    assert said("\u2066") in err
    assert jobs_on(server) == []


@pytest.mark.parametrize("bad", ["\u2028", "\u202e", "\u200b", "\ufeff", "\U000e0041"])
def test_names_and_callback_urls_refuse_the_same_characters(server: Server, bad: str) -> None:
    """The other client texts a job keeps: refused already, by their own rules."""
    for field in ("type", "queue"):
        body = {"type": "echo", field: f"echo{bad}"}
        status, answer = enqueue(server, body)
        assert status == 422, answer
        [error] = answer["error"]["details"]
        assert error["loc"] == [field]
    with pytest.raises(ssrf.Refused, match="whitespace, control characters"):
        ssrf.parse_url(f"https://example.com/a{bad}b")
    assert jobs_on(server) == []


def test_the_refused_text_says_so() -> None:
    for words in ("U+2028", "U+202E", "U+200C and U+200D are text"):
        assert words in client_text.REFUSED_TEXT
