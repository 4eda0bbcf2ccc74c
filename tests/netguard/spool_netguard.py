"""Nothing the tests run may send traffic outside 127.0.0.0/8.

A socket-level guard, installed for the whole test session (tests/conftest.py)
and, through sitecustomize.py, in every Python process the tests start:

- connect / connect_ex / sendto / sendmsg on an IPv4 or IPv6 socket succeed
  only towards 127.0.0.0/8, ::1 (or ::ffff:127.x.x.x) and the name localhost;
  anything else raises Blocked (a ConnectionRefusedError, so libraries fail
  fast instead of retrying into a timeout) or, for connect_ex, returns
  ECONNREFUSED. create_connection, asyncio and ssl go through these.
- getaddrinfo / gethostbyname(_ex) / gethostbyaddr answer numeric addresses
  and localhost; any other name is refused (socket.gaierror / socket.herror)
  before a resolver is asked, so a public name never leads to a DNS query.
- Unix sockets and binding (including 0.0.0.0) are untouched.

Every refusal is also recorded: in this process (`violations`) and, when
SPOOL_TEST_NETGUARD_LOG names a file, appended to it, so a library that
swallows the error still fails the test that caused it (conftest checks
after each test). The host's own name is refused without being recorded:
smtplib and email.utils ask for it (getfqdn) and cope with a refusal.

C code that opens its own sockets (libpq under psycopg) is outside the
guard's reach; the suite points it only at 127.0.0.1.

Stdlib only: it is imported by sitecustomize in any Python the tests start,
including tool environments (aws-sam-cli) that do not have the project.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import sys
import threading
from typing import Any

ENV_ON = "SPOOL_TEST_NETGUARD"
ENV_LOG = "SPOOL_TEST_NETGUARD_LOG"
ENV_ALLOW = "SPOOL_TEST_ALLOW_NETWORK"  # "1": no guard (debugging only)
HERE = os.path.dirname(os.path.abspath(__file__))
LOCAL_NAMES = frozenset(
    {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", "localhost6"}
)
_INET = (socket.AF_INET, socket.AF_INET6)

violations: list[str] = []
_lock = threading.Lock()
_log_path: str | None = None
_log_offset = 0
_real: dict[str, Any] = {}


class Blocked(ConnectionRefusedError):
    """A connection or datagram to an address outside 127.0.0.0/8 was refused."""


def is_loopback(host: str) -> bool:
    """A numeric loopback address, or the name localhost (no resolver asked)."""
    name = host.strip().lower().rstrip(".")
    if name in LOCAL_NAMES or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0].strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _numeric(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0].strip("[]"))
    except ValueError:
        return False
    return True


def _host_text(host: Any) -> str | None:
    if host is None:
        return None
    return host.decode("idna", "replace") if isinstance(host, bytes) else str(host)


def _own_name(host: str) -> bool:
    try:
        own = _real["gethostname"]()
    except OSError:
        return False
    return host.lower().rstrip(".") in (own.lower(), own.lower().split(".")[0])


def record(what: str) -> None:
    """Remember a refused attempt here and in the shared log (children write there)."""
    line = f"pid {os.getpid()} ({os.path.basename(sys.argv[0] or 'python')}): {what}"
    with _lock:
        violations.append(line)
        if _log_path:
            try:
                with open(_log_path, "a", encoding="utf-8") as log:
                    log.write(line + "\n")
            except OSError:
                pass


def take() -> list[str]:
    """Refusals recorded since the last call, in this process and its children."""
    global _log_offset
    with _lock:
        found = list(violations) if _log_path is None else []
        violations.clear()
        if _log_path:
            try:
                with open(_log_path, encoding="utf-8") as log:
                    log.seek(_log_offset)
                    found.extend(line.rstrip("\n") for line in log.readlines())
                    _log_offset = log.tell()
            except FileNotFoundError:
                pass
    return found


def _refuse(sock: socket.socket, address: Any, how: str) -> str | None:
    if sock.family not in _INET:
        return None
    host = address[0] if isinstance(address, tuple) and address else address
    text = _host_text(host) or ""
    if is_loopback(text):
        return None
    return f"{how} to {address!r} refused: only 127.0.0.0/8 and ::1 are allowed in tests"


def _connect(sock: socket.socket, address: Any) -> None:
    problem = _refuse(sock, address, "connect")
    if problem:
        record(problem)
        raise Blocked(errno.ECONNREFUSED, f"network guard: {problem}")
    _real["connect"](sock, address)


def _connect_ex(sock: socket.socket, address: Any) -> int:
    problem = _refuse(sock, address, "connect_ex")
    if problem:
        record(problem)
        return errno.ECONNREFUSED
    result: int = _real["connect_ex"](sock, address)
    return result


def _sendto(sock: socket.socket, data: Any, *args: Any) -> int:
    address = args[-1] if args else None
    problem = _refuse(sock, address, "sendto")
    if problem:
        record(problem)
        raise Blocked(errno.ECONNREFUSED, f"network guard: {problem}")
    sent: int = _real["sendto"](sock, data, *args)
    return sent


def _sendmsg(sock: socket.socket, buffers: Any, *args: Any, **kwargs: Any) -> int:
    address = kwargs.get("address", args[2] if len(args) > 2 else None)
    if address is not None:
        problem = _refuse(sock, address, "sendmsg")
        if problem:
            record(problem)
            raise Blocked(errno.ECONNREFUSED, f"network guard: {problem}")
    sent: int = _real["sendmsg"](sock, buffers, *args, **kwargs)
    return sent


def _name_refused(host: Any, how: str) -> str | None:
    text = _host_text(host)
    if text is None or text == "" or _numeric(text) or is_loopback(text):
        return None
    if not _own_name(text):
        record(f"{how}({text!r}) refused: no name resolution in tests but localhost")
    return f"network guard: {how}({text!r}) refused: only localhost resolves in tests"


def _getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    problem = _name_refused(host, "getaddrinfo")
    if problem:
        raise socket.gaierror(socket.EAI_NONAME, problem)
    return _real["getaddrinfo"](host, *args, **kwargs)


def _gethostbyname(host: Any) -> Any:
    problem = _name_refused(host, "gethostbyname")
    if problem:
        raise socket.gaierror(socket.EAI_NONAME, problem)
    return _real["gethostbyname"](host)


def _gethostbyname_ex(host: Any) -> Any:
    problem = _name_refused(host, "gethostbyname_ex")
    if problem:
        raise socket.gaierror(socket.EAI_NONAME, problem)
    return _real["gethostbyname_ex"](host)


def _gethostbyaddr(host: Any) -> Any:
    text = _host_text(host) or ""
    if not is_loopback(text):
        # A reverse lookup of a numeric address asks DNS too: refuse all but loopback.
        problem = f"network guard: gethostbyaddr({text!r}) refused: only localhost resolves"
        if not _own_name(text):
            record(f"gethostbyaddr({text!r}) refused: no name resolution in tests but localhost")
        raise socket.herror(1, problem)
    return _real["gethostbyaddr"](host)


def installed() -> bool:
    return bool(getattr(socket, "_spool_netguard", False))


def install(log_path: str | None = None) -> None:
    """Patch the socket module in this process (idempotent)."""
    global _log_path
    if log_path:
        _log_path = log_path
    if installed():
        return
    _real.update(
        connect=socket.socket.connect,
        connect_ex=socket.socket.connect_ex,
        sendto=socket.socket.sendto,
        sendmsg=getattr(socket.socket, "sendmsg", None),
        getaddrinfo=socket.getaddrinfo,
        gethostbyname=socket.gethostbyname,
        gethostbyname_ex=socket.gethostbyname_ex,
        gethostbyaddr=socket.gethostbyaddr,
        gethostname=socket.gethostname,
    )
    socket.socket.connect = _connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign,assignment]
    socket.socket.sendto = _sendto  # type: ignore[method-assign,assignment]
    if _real["sendmsg"] is not None:
        socket.socket.sendmsg = _sendmsg  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = _getaddrinfo
    socket.gethostbyname = _gethostbyname
    socket.gethostbyname_ex = _gethostbyname_ex
    socket.gethostbyaddr = _gethostbyaddr
    socket._spool_netguard = True  # type: ignore[attr-defined]


def child_env(env: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """A child's environment with the guard switched on (this directory first on
    PYTHONPATH, so its sitecustomize runs) and the shared refusal log named."""
    out = dict(env)
    if out.get(ENV_ALLOW) == "1" or not installed():
        return out
    out[ENV_ON] = "1"
    if _log_path:
        out[ENV_LOG] = _log_path
    parts = [p for p in out.get("PYTHONPATH", "").split(os.pathsep) if p]
    if HERE not in parts:
        out["PYTHONPATH"] = os.pathsep.join([HERE, *parts])
    return out


def install_from_env() -> None:
    """sitecustomize's entry: guard this process if the parent test asked for it."""
    if os.environ.get(ENV_ON) == "1" and os.environ.get(ENV_ALLOW) != "1":
        install(os.environ.get(ENV_LOG) or None)
