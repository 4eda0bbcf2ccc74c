"""A new user's mistakes (stop 46), each refused with one line that says what to do.

Found from outside, by running `spool` as a reader of the README would:
- `SPOOL_STORE_URL=sqlite:/var/spool.db` (one slash, as in `file:/path`) was taken as
  the relative path `var/spool.db`: the server started, and its jobs went into a folder
  the user never named, under whatever directory the command ran in.
- `SPOOL_STORE_URL=mysql://db.example/spool` without `SPOOL_API_KEYS` told the user to
  set API keys; with keys set, the next start said the scheme was unknown. The scheme is
  the first thing wrong, so it is the first thing said.
- `@handler` written without its parentheses (and so without a job type) stopped the
  import with `handler <function f at 0x...>: a job type is 1-64 of ...`, naming no
  fix; it now says to write `@handler("TYPE")` above the function.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib.config import ConfigError
from chalicelib.storage import open_store
from tests.procs import ROOT, guarded_env


def _spool(cwd: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`spool ARGV` run from CWD as a shell would, with this checkout's code."""
    child = guarded_env(PYTHONPATH=str(ROOT), **env)
    for name in ("SPOOL_API_KEYS", "SPOOL_URL", "SPOOL_API_KEY", "SPOOL_HANDLERS"):
        if name not in env:
            child.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "local.cli", *argv],
        cwd=cwd,
        env=child,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("url", ["sqlite:/var/spool.db", "sqlite:var/spool.db"])
def test_a_sqlite_url_without_its_slashes_is_refused_not_made_relative(
    tmp_path: Path, url: str
) -> None:
    ran = _spool(tmp_path, "serve", "--port", "0", SPOOL_STORE_URL=url)
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert ran.stderr.count("\n") == 1 and "Traceback" not in ran.stderr
    assert ran.stderr.startswith(f"spool: SPOOL_STORE_URL {url!r}: ")
    assert "sqlite:///var/spool.db" in ran.stderr and "sqlite:////var/spool.db" in ran.stderr
    assert not (tmp_path / "var").exists()  # nothing made where it was not asked for


def test_open_store_refuses_a_sqlite_url_with_one_slash(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="three slashes"):
        open_store(f"sqlite:{tmp_path}/x.db")
    assert not (tmp_path / "x.db").exists()


def test_the_sqlite_urls_the_docs_give_still_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for url in ("sqlite:///rel.db", f"sqlite:///{tmp_path}/abs.db", "sqlite:///:memory:"):
        open_store(url).close()
    assert (tmp_path / "rel.db").exists() and (tmp_path / "abs.db").exists()


@pytest.mark.parametrize("url", ["mysql://db.example/spool", "postgress://db.example/spool"])
def test_an_unknown_scheme_is_named_before_any_word_on_keys(tmp_path: Path, url: str) -> None:
    ran = _spool(tmp_path, "serve", "--port", "0", SPOOL_STORE_URL=url)
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert "unknown store URL scheme" in ran.stderr, ran.stderr
    assert "API keys" not in ran.stderr and ran.stderr.count("\n") == 1


def test_a_shared_store_without_keys_is_still_refused_for_its_keys(tmp_path: Path) -> None:
    ran = _spool(tmp_path, "serve", "--port", "0", SPOOL_STORE_URL="postgresql://db.example/spool")
    assert ran.returncode == 2 and "needs API keys" in ran.stderr, ran.stderr


def test_handler_without_parentheses_says_to_give_the_type(tmp_path: Path) -> None:
    (tmp_path / "jobs.py").write_text(
        "from chalicelib.handlers import handler\n\n\n"
        "@handler\n"
        "def send_report(payload):\n"
        "    return 1\n",
        encoding="utf-8",
    )
    ran = _spool(
        tmp_path,
        "worker",
        "--burst",
        SPOOL_HANDLERS="jobs",
        SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db",
    )
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert ran.stderr.count("\n") == 1 and "0x" not in ran.stderr, ran.stderr
    assert '@handler("send_report")' in ran.stderr, ran.stderr


def test_periodic_without_parentheses_says_to_give_its_arguments() -> None:
    from chalicelib.periodic import periodic

    def nightly() -> None:
        """A function the decorator is mistakenly applied to bare."""

    with pytest.raises(ValueError) as caught:
        periodic(nightly)  # type: ignore[call-arg, arg-type]
    assert "0x" not in str(caught.value) and "@periodic(" in str(caught.value)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_dynamodb_endpoint_that_is_down_is_said_so_with_create(tmp_path: Path) -> None:
    """docs/aws.md's moto flow with moto_server not (yet) running: with create=1 every
    command said "unexpected error: EndpointConnectionError ... SPOOL_DEBUG=1", where
    the same URL without create=1 said the store is unreachable and what to check."""
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    url = f"dynamodb://jobs?queue=jobs&bucket=jobs-bucket&endpoint={endpoint}&create=1"
    ran = _spool(tmp_path, "jobs", SPOOL_STORE_URL=url)
    assert ran.returncode != 0 and "unexpected error" not in ran.stderr, ran.stderr
    assert "unreachable" in ran.stderr and "SPOOL_STORE_URL" in ran.stderr, ran.stderr
    assert ran.stderr.count("\n") == 1 and "Traceback" not in ran.stderr


@pytest.mark.parametrize("region", ["bogus!", "us_east_1", "-1"])
def test_a_keys_region_no_sdk_takes_is_refused_at_start(region: str) -> None:
    """SPOOL_API_KEYS_REGION=us_east_1 beside SPOOL_API_KEYS_PARAMETER: `spool serve`
    started (exit 0, a banner), and every request then answered 503 "the API keys
    cannot be read right now; retry shortly", a wait that no retry ends: the SDK
    refuses such a region before sending anything. Now refused at start, named."""
    from chalicelib.api import key_source
    from chalicelib.config import Settings

    settings = Settings(
        api_keys="",
        extra={
            "SPOOL_API_KEYS_PARAMETER": "/spool/dev/api-keys",
            "SPOOL_API_KEYS_REGION": region,
        },
    )
    with pytest.raises(ValueError, match="SPOOL_API_KEYS_REGION") as caught:
        key_source.validate(settings)
    assert "us-east-1" in str(caught.value) and repr(region) in str(caught.value)


def test_a_region_an_sdk_takes_is_left_alone() -> None:
    from chalicelib.api import key_source
    from chalicelib.config import Settings

    for region in ("us-east-1", "eu-central-2", "us-gov-west-1", ""):
        extra = {"SPOOL_API_KEYS_PARAMETER": "/spool/dev/api-keys", "SPOOL_API_KEYS_REGION": region}
        key_source.validate(Settings(api_keys="", extra=extra))


def test_serve_refuses_the_region_before_its_banner(tmp_path: Path) -> None:
    ran = _spool(
        tmp_path,
        "serve",
        "--port",
        "0",
        SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db",
        SPOOL_API_KEYS_PARAMETER="/spool/dev/api-keys",
        SPOOL_API_KEYS_REGION="us_east_1",
    )
    assert ran.returncode == 2 and "serving app.py" not in ran.stdout, ran.stdout + ran.stderr
    assert ran.stderr.startswith("spool: SPOOL_API_KEYS_REGION") and ran.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SPOOL_WEBHOOK_ALLOW_PRIVATE", "bogus"),
        ("SPOOL_WEBHOOK_MAX_ATTEMPTS", "ten"),
        ("SPOOL_WEBHOOK_TIMEOUT", "-1"),
        ("SPOOL_WEBHOOK_PORTS", "http"),
    ],
)
def test_serve_refuses_a_bad_webhook_setting_before_its_banner(
    tmp_path: Path, variable: str, value: str
) -> None:
    """Found from outside: `SPOOL_WEBHOOK_ALLOW_PRIVATE=bogus spool serve` started, and
    the first `POST /enqueue` with a `callback_url` answered 500 internal_error (the
    setting was read there for the first time). Now refused at start, one line."""
    ran = _spool(
        tmp_path,
        "serve",
        "--port",
        "0",
        SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db",
        **{variable: value},
    )
    assert ran.returncode == 2 and "serving app.py" not in ran.stdout, ran.stdout + ran.stderr
    assert ran.stderr.startswith(f"spool: {variable}") and ran.stderr.count("\n") == 1, ran.stderr


def test_a_malformed_smtp_setting_at_enqueue_is_the_server_s_not_the_job_s(
    tmp_path: Path,
) -> None:
    """`SPOOL_SMTP_PORT=bogus spool enqueue send_email ...` said "payload refused for
    the 'send_email' handler: ... Fix the job and try again" (exit 2; over HTTP a 422),
    though no job could be right: the setting is what to fix. Now it is the server's
    misconfiguration (503 `misconfigured` over HTTP; exit 1 here), naming the setting."""
    from chalicelib.builtin import email
    from chalicelib.errors import Misconfigured

    payload = email.EmailPayload.model_validate(
        {"to": ["a@example.com"], "subject": "x", "text": "y", "from": "b@example.com"}
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPOOL_SMTP_PORT", "bogus")
        with pytest.raises(Misconfigured, match="SPOOL_SMTP_PORT"):
            email.admit(payload, "acme")
    ran = _spool(
        tmp_path,
        "enqueue",
        "send_email",
        "--payload",
        '{"to": ["a@example.com"], "subject": "x", "text": "y", "from": "b@example.com"}',
        SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db",
        SPOOL_SMTP_PORT="bogus",
    )
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "SPOOL_SMTP_PORT" in ran.stderr and "Fix the job" not in ran.stderr, ran.stderr


def test_http_request_and_resize_image_say_a_bad_setting_is_the_server_s() -> None:
    """As send_email's: a malformed SPOOL_HTTP_* or SPOOL_IMAGE_* setting met by the
    enqueue-time check was a 422 "payload refused", which no client can mend."""
    from chalicelib.builtin import http_request, images
    from chalicelib.errors import Misconfigured

    request = http_request.HttpRequestPayload.model_validate({"url": "https://example.com/"})
    resize = images.ResizePayload.model_validate(
        {"key": "acme/in.png", "sizes": [{"width": 10, "height": 10}]}
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPOOL_HTTP_ALLOW_PRIVATE", "bogus")
        with pytest.raises(Misconfigured, match="SPOOL_HTTP_ALLOW_PRIVATE"):
            http_request.admit(request, "acme")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPOOL_IMAGE_MAX_PIXELS", "bogus")
        with pytest.raises(Misconfigured, match="SPOOL_IMAGE_MAX_PIXELS"):
            images.admit_resize(resize, "acme")
