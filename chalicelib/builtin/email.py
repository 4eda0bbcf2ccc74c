"""`send_email`: deliver one message over SMTP.

The server and its credentials come from settings only, never from the
payload, so a job can choose what to say and to whom but not which relay to
use or whose account to send with.

The Message-ID is made from the job id, so every attempt of one job sends the
same Message-ID: if an attempt delivered the message but the worker died
before recording it, the re-run is recognisably the same message, and
receivers and relays that deduplicate by Message-ID drop the copy.

Outcomes: a 2xx reply is success (recipients refused individually while
others were accepted are listed in the result, not retried, since a retry
would resend to the accepted ones); a 4xx reply, a dropped connection or a
timeout is retried with backoff; a 5xx reply, TLS verification failure or a
server lacking STARTTLS/AUTH is a PermanentError (dead at once). Once DATA is
answered 250 the message is delivered, whatever QUIT gets back. The whole
conversation ends by the job's deadline, and an attempt the worker abandoned
sends no DATA (see _Bound).

Settings: SPOOL_SMTP_HOST (localhost), SPOOL_SMTP_PORT (25; 587 with STARTTLS,
465 with SSL), SPOOL_SMTP_STARTTLS, SPOOL_SMTP_SSL, SPOOL_SMTP_USERNAME,
SPOOL_SMTP_PASSWORD, SPOOL_SMTP_FROM (the default sender),
SPOOL_SMTP_ALLOWED_FROM (senders a payload may choose: addresses or @domains),
SPOOL_SMTP_TIMEOUT (30 s), SPOOL_SMTP_CA_FILE, SPOOL_SMTP_LOCAL_HOSTNAME (the
EHLO name), SPOOL_SMTP_MESSAGE_ID_DOMAIN.
"""

from __future__ import annotations

import io
import logging
import re
import smtplib
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, getaddresses
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chalicelib.builtin import email_headers
from chalicelib.config import Settings
from chalicelib.errors import Misconfigured, PermanentError
from chalicelib.handlers import JobContext, handler

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from chalicelib.builtin.socket_reads import DeadlineReader

logger = logging.getLogger(__name__)

MAX_RECIPIENTS = 100
MAX_LINE = 998
MAX_BODY_CHARS = 2_000_000
# One server reply, all its lines: smtplib keeps every line of a multi-line reply,
# so a server answering "250-..." forever filled the worker's memory until the
# deadline. Real EHLO answers are a few hundred bytes.
MAX_REPLY_BYTES = 64 * 1024
# Headers a payload may add. Routing, identity and MIME structure stay the handler's.
SAFE_HEADERS = frozenset(
    {
        "in-reply-to",
        "references",
        "list-id",
        "list-help",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "auto-submitted",
        "precedence",
        "importance",
        "priority",
        "keywords",
        "comments",
        "feedback-id",
    }
)
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,76}$")
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_DOMAIN = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def normalize_address(value: str) -> str:
    """One mailbox, as `addr` or `Name <addr>`; anything else is refused."""
    if not isinstance(value, str) or not value.strip() or len(value) > 320:
        raise ValueError("an address must be a non-empty string of at most 320 characters")
    email_headers.check_value(value, f"address {value!r}")
    parsed = getaddresses([value])
    if len(parsed) != 1 or not parsed[0][1]:
        raise ValueError(f"{value!r} is not exactly one email address")
    name, addr = parsed[0]
    email_headers.check_value(name, f"the display name of {value!r}")  # quotes undone
    local, _, domain = addr.rpartition("@")
    if not local or len(local) > 64 or not _LOCAL.fullmatch(local):
        raise ValueError(f"{value!r} has an invalid local part")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"{value!r} has an invalid domain") from None
    if len(domain) > 253 or not _DOMAIN.fullmatch(domain):
        raise ValueError(f"{value!r} has an invalid domain")
    try:
        mailbox = str(Address(display_name=name, addr_spec=f"{local}@{domain.lower()}"))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{value!r} is not a valid mailbox: {exc}") from None
    return email_headers.check_value(mailbox, f"address {value!r}")


def addr_spec(address: str) -> str:
    """The bare address of a normalized mailbox, for the SMTP envelope."""
    return getaddresses([address])[0][1]


class EmailPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    to: list[str] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    cc: list[str] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    bcc: list[str] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    sender: str | None = Field(default=None, alias="from")
    reply_to: list[str] = Field(default_factory=list, max_length=10)
    subject: str = Field(min_length=1, max_length=MAX_LINE)
    text: str | None = Field(default=None, max_length=MAX_BODY_CHARS)
    html: str | None = Field(default=None, max_length=MAX_BODY_CHARS)
    headers: dict[str, str] = Field(default_factory=dict, max_length=20)

    @field_validator("to", "cc", "bcc", "reply_to", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("to", "cc", "bcc", "reply_to")
    @classmethod
    def _mailboxes(cls, value: list[str]) -> list[str]:
        return [normalize_address(v) for v in value]

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        return None if value is None else normalize_address(value)

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        return email_headers.check_value(value, "the subject")

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            lowered = name.lower()
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"invalid header name {name!r}")
            custom = lowered.startswith("x-") and not lowered.startswith("x-spool-")
            if lowered not in SAFE_HEADERS and not custom:
                raise ValueError(
                    f"header {name!r} cannot be set by a payload; allowed: X-* and "
                    + ", ".join(sorted(SAFE_HEADERS))
                )
            if len(text) > MAX_LINE:
                raise ValueError(f"header {name!r} is longer than {MAX_LINE} characters")
            email_headers.check_value(text, f"header {name!r}")
        return value

    @model_validator(mode="after")
    def _complete(self) -> EmailPayload:
        if self.text is None and self.html is None:
            raise ValueError("give a text body, an html body, or both")
        if len(self.to) + len(self.cc) + len(self.bcc) > MAX_RECIPIENTS:
            raise ValueError(f"at most {MAX_RECIPIENTS} recipients in all")
        return self


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "localhost"
    port: int = 25
    starttls: bool = False
    ssl: bool = False
    username: str = ""
    password: str = ""
    # SPOOL_SMTP_PASSWORD_PARAMETER: the SSM SecureString holding the password, read at
    # the first login (chalicelib/secret_parameters.py), so neither the API's admit nor
    # the Lambda environment ever holds it.
    password_parameter: str = ""
    sender: str = ""
    allowed_senders: tuple[str, ...] = ()
    timeout: float = 30.0
    ca_file: str | None = None
    local_hostname: str | None = None
    message_id_domain: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpSettings:
        """Read and check the settings; a misconfiguration is reported, not retried."""
        from chalicelib.builtin.setting_values import ca_file, named
        from chalicelib.secret_parameters import parameter_of

        try:
            starttls = settings.flag("SPOOL_SMTP_STARTTLS")
            implicit = settings.flag("SPOOL_SMTP_SSL")
            if starttls and implicit:
                raise ValueError("set SPOOL_SMTP_STARTTLS or SPOOL_SMTP_SSL, not both")
            default_port = 465 if implicit else 587 if starttls else 25
            sender = settings.text("SPOOL_SMTP_FROM")
            config = cls(
                host=settings.text("SPOOL_SMTP_HOST", "localhost"),
                port=settings.integer("SPOOL_SMTP_PORT", default_port, 1, 65535),
                starttls=starttls,
                ssl=implicit,
                username=settings.text("SPOOL_SMTP_USERNAME"),
                password=settings.extra.get("SPOOL_SMTP_PASSWORD", ""),
                password_parameter=parameter_of(settings, "SPOOL_SMTP_PASSWORD"),
                sender=named("SPOOL_SMTP_FROM", normalize_address, sender) if sender else "",
                allowed_senders=tuple(s.lower() for s in settings.items("SPOOL_SMTP_ALLOWED_FROM")),
                timeout=settings.number("SPOOL_SMTP_TIMEOUT", 30.0, 0.1, 600),
                ca_file=named("SPOOL_SMTP_CA_FILE", ca_file, settings.text("SPOOL_SMTP_CA_FILE")),
                local_hostname=named(
                    "SPOOL_SMTP_LOCAL_HOSTNAME",
                    _hostname,
                    settings.text("SPOOL_SMTP_LOCAL_HOSTNAME"),
                )
                or None,
                message_id_domain=named(
                    "SPOOL_SMTP_MESSAGE_ID_DOMAIN",
                    _hostname,
                    settings.text("SPOOL_SMTP_MESSAGE_ID_DOMAIN"),
                ),
            )
        except ValueError as exc:
            raise PermanentError(f"send_email is misconfigured: {exc}") from None
        if config.username and not (config.starttls or config.ssl):
            raise PermanentError(
                "send_email is misconfigured: SMTP credentials are set but neither "
                "SPOOL_SMTP_STARTTLS nor SPOOL_SMTP_SSL is, so they would be sent in clear"
            )
        return config

    def login_password(self) -> str:
        """The password to log in with: the plain setting, else its parameter's value
        (SecretUnavailable when it cannot be read: the attempt is retried)."""
        if self.password or not self.password_parameter:
            return self.password
        from chalicelib.secret_parameters import read

        return read(self.password_parameter)

    @property
    def senders(self) -> tuple[str, ...]:
        """Who a payload's `from` may be. Unset, the relay must not send as anyone a
        tenant names (one tenant posing as another's domain): senders at the default
        sender's domain; with no default sender either, any ("*" says so explicitly)."""
        if self.allowed_senders:
            return self.allowed_senders
        if self.sender:
            return ("@" + addr_spec(self.sender).lower().rpartition("@")[2],)
        return ("*",)

    def sender_allowed(self, address: str) -> bool:
        allowed = self.senders
        if "*" in allowed:
            return True
        bare = addr_spec(address).lower()
        domain = "@" + bare.rpartition("@")[2]
        return bare in allowed or domain in allowed

    def sender_refused(self, address: str) -> str:
        if self.allowed_senders:
            return f"sender {address!r} is not in SPOOL_SMTP_ALLOWED_FROM"
        return (
            f"sender {address!r} is not at the domain of SPOOL_SMTP_FROM ({self.senders[0]}); "
            'list the senders payloads may use in SPOOL_SMTP_ALLOWED_FROM ("*" for any)'
        )


def _hostname(value: str) -> str:
    """A name the handler writes into EHLO or the Message-ID: a plain domain."""
    if value and (len(value) > 253 or not _DOMAIN.fullmatch(value)):
        raise ValueError(f"{value!r} is not a host name")
    return value


class SMTPReplyTooLong(smtplib.SMTPException):
    """A reply line longer than smtplib reads: retried, as a dropped connection is."""


class TemporaryFailure(Exception):
    """The server said "not now" (4xx) or the connection failed: retried with backoff."""


def message_id(job_id: str, sender: str, domain: str = "") -> str:
    """Stable per job, so every attempt of one job carries the same Message-ID."""
    return f"<{job_id}@{domain or addr_spec(sender).rpartition('@')[2]}>"


def build_message(payload: EmailPayload, sender: str, msg_id: str, job_id: str) -> EmailMessage:
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = sender
    message["To"] = ", ".join(payload.to)
    if payload.cc:
        message["Cc"] = ", ".join(payload.cc)
    if payload.reply_to:
        message["Reply-To"] = ", ".join(payload.reply_to)
    message["Subject"] = payload.subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = msg_id
    message["X-Spool-Job-Id"] = job_id
    for name, value in payload.headers.items():
        message[name] = value
    if payload.text is not None:
        message.set_content(payload.text)
        if payload.html is not None:
            message.add_alternative(payload.html, subtype="html")
    else:
        message.set_content(payload.html or "", subtype="html")
    return message


def _tls_context(config: SmtpSettings) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if config.ca_file:
        try:
            context.load_verify_locations(cafile=config.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise PermanentError(f"SPOOL_SMTP_CA_FILE cannot be loaded: {exc}") from None
    return context


def wire_bytes(message: EmailMessage) -> bytes:
    """The message as it will be sent, refused (permanently) if its header block
    is not exactly the headers it was built with: a forged header never leaves."""
    wire = email_headers.render(message)
    try:
        email_headers.check_wire(wire, message.keys())
    except email_headers.UnsafeHeader as exc:
        raise PermanentError(f"refusing to send: {exc}") from None
    return wire


class _Bound:
    """The time one attempt's SMTP conversation may take, and whether to go on.

    Every socket wait is cut to the smaller of SPOOL_SMTP_TIMEOUT and what is left
    before the job's deadline, and refused once the worker abandoned the attempt
    (`ctx.cancelled`): a timeout per read alone let a server dripping its replies
    hold an attempt for as long as it liked, and the abandoned attempt then
    delivered the message after its retry had (a duplicate)."""

    def __init__(
        self, deadline: float, per_step: float, cancelled: threading.Event | None = None
    ) -> None:
        self.deadline = deadline
        self.per_step = per_step
        self.cancelled = cancelled

    def timeout(self) -> float:
        """Seconds the next socket operation may wait; raises when none are left."""
        if self.cancelled is not None and self.cancelled.is_set():
            raise TimeoutError("attempt abandoned by the worker")
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the SMTP conversation ran out of the job's time")
        return min(self.per_step, left)


class _BoundedSMTP(smtplib.SMTP):
    """smtplib.SMTP (or SMTPS, given a context) whose connect, TLS handshakes, reads
    and writes all end by the attempt's deadline, and which sends no DATA (nor any
    other command) once the worker abandoned the attempt."""

    def __init__(
        self, config: SmtpSettings, bound: _Bound, implicit_tls: ssl.SSLContext | None
    ) -> None:
        self._bound = bound  # before __init__, which connects
        self._reader: DeadlineReader | None = None
        self._implicit_tls = implicit_tls
        super().__init__(
            config.host,
            config.port,
            local_hostname=config.local_hostname,
            timeout=config.timeout,
        )

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.create_connection((host, port), self._bound.timeout(), self.source_address)
        if self._implicit_tls is None:
            return sock
        try:
            # With a timeout set, CPython bounds the whole handshake by it.
            sock.settimeout(self._bound.timeout())
            return self._implicit_tls.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise

    def send(self, s: Buffer | str) -> None:
        if self.sock is not None:
            # sendall with a timeout: one bound for all of it.
            self.sock.settimeout(self._bound.timeout())
        super().send(s)

    def getreply(self) -> tuple[int, bytes]:
        if self.file is None and self.sock is not None:
            # Imported here: enqueueing (the API) loads this module for its payload model only.
            from chalicelib.builtin.socket_reads import DeadlineReader

            self._reader = DeadlineReader(self.sock, self._bound.timeout)
            self.file = io.BufferedReader(self._reader)
        if self._reader is not None:
            # smtplib does not pipeline: what arrives now is this reply.
            self._reader.limit(MAX_REPLY_BYTES, f"the server's reply ({MAX_REPLY_BYTES} bytes)")
        try:
            reply = super().getreply()
        except smtplib.SMTPResponseException as exc:
            # Raised, never returned, only for a line over smtplib's 8192 bytes: a reply
            # the server did not send ("500 Line too long."), which made the job dead
            # as if the server had refused it. The same fault as an endless reply.
            self.close()
            raise SMTPReplyTooLong(
                f"a line of the server's reply is longer than smtplib reads ({exc.smtp_error!r})"
            ) from None
        if self.sock is not None:
            # STARTTLS wraps the socket after this reply: bound its handshake too.
            # Never raises: a reply that arrived in time (250 to DATA) stands.
            self.sock.settimeout(
                max(0.001, min(self._bound.per_step, self._bound.deadline - time.monotonic()))
            )
        return reply

    def data(self, msg: Buffer | str) -> tuple[int, bytes]:
        # The step that commits to sending: never taken by an abandoned attempt, nor
        # one with no time left to hear the answer.
        self._bound.timeout()
        return super().data(msg)


def _close(smtp: smtplib.SMTP) -> None:
    """End the session politely if the server lets us; never raises. Once DATA was
    answered 250 the message is the server's: a QUIT answered 500 or 421, or not
    at all, changes nothing about the job."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError) as exc:
        logger.debug("send_email: QUIT failed, closing: %s: %s", type(exc).__name__, exc)
    finally:
        smtp.close()


def deliver(
    message: bytes,
    envelope_from: str,
    recipients: list[str],
    config: SmtpSettings,
    bound: _Bound,
) -> dict[str, tuple[int, str]]:
    """Send once; map every failure to retry-later or give-up. Returns refused recipients."""
    context = _tls_context(config) if (config.starttls or config.ssl) else None
    password = config.login_password() if config.username else ""  # before connecting
    try:
        smtp = _BoundedSMTP(config, bound, context if config.ssl else None)
        try:
            smtp.ehlo()
            if config.starttls:
                smtp.starttls(context=context)
                smtp.ehlo()
            if config.username:
                smtp.login(config.username, password)
            refused = smtp.sendmail(envelope_from, recipients, message)
        finally:
            _close(smtp)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = {addr: (code, _text(reply)) for addr, (code, reply) in exc.recipients.items()}
        summary = "; ".join(f"{a}: {c} {m}" for a, (c, m) in codes.items())
        if any(400 <= code < 500 for code, _ in codes.values()):
            raise TemporaryFailure(f"recipients deferred: {summary}") from None
        raise PermanentError(f"all recipients refused: {summary}") from None
    except smtplib.SMTPResponseException as exc:
        reply = f"SMTP {exc.smtp_code} {_text(exc.smtp_error)}"
        if 500 <= exc.smtp_code < 600:
            raise PermanentError(reply) from None
        raise TemporaryFailure(reply) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise PermanentError(
            f"the SMTP server does not support what settings require: {exc}"
        ) from None
    except ssl.SSLCertVerificationError as exc:
        raise PermanentError(f"TLS certificate check failed for {config.host}: {exc}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise TemporaryFailure(f"{server_named(config)}: {type(exc).__name__}: {exc}") from None
    return {addr: (code, _text(reply)) for addr, (code, reply) in refused.items()}


def server_named(config: SmtpSettings) -> str:
    """The relay a failed conversation was with, and the settings that choose it.

    A refused or dropped connection said only `ConnectionRefusedError: [Errno 111]
    Connection refused` (s58): nothing told the operator which host and port the
    worker had tried (the default port depends on STARTTLS and SSL) or where to
    change them. The TLS failure already named the host; the tenant sees no more
    than the operator's relay address, which a payload can never choose."""
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"SMTP server {host}:{config.port} (SPOOL_SMTP_HOST, SPOOL_SMTP_PORT)"


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def send(
    payload: EmailPayload,
    config: SmtpSettings,
    job_id: str,
    deadline: float,
    cancelled: threading.Event | None = None,
) -> dict[str, Any]:
    """`deadline` (time.monotonic()) ends the whole SMTP conversation; `cancelled`,
    once set, stops it before any further command (DATA above all)."""
    refusal = sender_refusal(payload, config)  # a job stored before admit, or other settings
    if refusal:
        raise PermanentError(refusal)
    sender = payload.sender or config.sender
    msg_id = message_id(job_id, sender, config.message_id_domain)
    try:
        message = build_message(payload, sender, msg_id, job_id)
    except (ValueError, TypeError) as exc:  # the email package refused a value
        raise PermanentError(f"cannot build the message: {exc}") from None
    wire = wire_bytes(message)
    recipients = list(dict.fromkeys(addr_spec(a) for a in payload.to + payload.cc + payload.bcc))
    bound = _Bound(deadline, config.timeout, cancelled)
    refused = deliver(wire, addr_spec(sender), recipients, config, bound)
    return {
        "message_id": msg_id,
        "accepted": [r for r in recipients if r not in refused],
        "refused": {addr: {"code": code, "reply": text} for addr, (code, text) in refused.items()},
    }


def sender_refusal(payload: EmailPayload, config: SmtpSettings) -> str | None:
    """Why no attempt could send this payload under these settings, or None: no sender
    at all, or a `from` outside the senders payloads may use."""
    if not (payload.sender or config.sender):
        return "no sender: give `from` in the payload or set SPOOL_SMTP_FROM"
    if payload.sender and not config.sender_allowed(payload.sender):
        return config.sender_refused(payload.sender)
    return None


def admit(payload: EmailPayload, tenant: str) -> None:
    """Refuse at enqueue (422) a job whose sender the settings refuse, as every attempt
    would: the API reads the worker's settings (Chalice stages share them), so the job
    would otherwise be stored only to go dead on its first attempt."""
    try:
        config = SmtpSettings.from_settings(Settings.from_env())
    except PermanentError as exc:
        # A setting no job can mend: the server's to fix (503 misconfigured), not a
        # refusal of this payload (it was 422 "payload refused ... Fix the job").
        raise Misconfigured.setting(exc) from None
    refusal = sender_refusal(payload, config)
    if refusal:
        raise ValueError(refusal)


@handler(
    "send_email",
    payload=EmailPayload,
    max_attempts=8,
    backoff=(30.0, 3600.0),
    timeout=60,
    admit=admit,
)
def send_email(payload: EmailPayload, ctx: JobContext) -> dict[str, Any]:
    """Backoff starts at 30 s and caps at an hour: greylisting servers ask for minutes."""
    config = SmtpSettings.from_settings(Settings.from_env())
    return send(payload, config, ctx.job.id, ctx.deadline, ctx.cancelled)
