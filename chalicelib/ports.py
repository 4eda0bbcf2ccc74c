"""Which TCP ports an outbound URL may name: a setting such as
`80,443,1024-65535` read into a small set of ranges.

A URL that comes from whoever may enqueue is sent from the operator's network
and address. Its host is held to ssrf.py's address rules; its port, without
this, to none, so a callback URL could make Spool POST to a public host's SMTP,
SSH or LDAP port (abuse that others trace to the operator) or, where private
addresses are opened, to any internal service on its own port.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The default of SPOOL_WEBHOOK_PORTS and SPOOL_HTTP_PORTS: the web ports and the
# unprivileged ones (where development and alternative HTTP servers listen). The
# privileged ports of other protocols (SMTP 25, SSH 22, LDAP 389 ...) never serve
# HTTP a tenant should reach, and a request there is abuse traced to the operator.
WEB_PORTS = "80, 443, 1024-65535"

_ENTRY = re.compile(r"^([0-9]{1,5})(?:-([0-9]{1,5}))?$", re.ASCII)


@dataclass(frozen=True)
class PortSet:
    """Inclusive port ranges, as the setting wrote them (`text`, for messages)."""

    ranges: tuple[tuple[int, int], ...]
    text: str

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and any(low <= port <= high for low, high in self.ranges)

    @classmethod
    def parse(cls, raw: str) -> PortSet:
        """`443`, `8000-8999`, comma-separated; ValueError saying which entry is wrong."""
        ranges: list[tuple[int, int]] = []
        entries = [entry.strip() for entry in raw.split(",")]
        if not any(entries):
            raise ValueError("give at least one port or range, such as 443 or 8000-8999")
        for entry in entries:
            match = _ENTRY.fullmatch(entry)
            if match is None:
                raise ValueError(f"{entry!r} is not a port (1-65535) or a range such as 8000-8999")
            low = int(match.group(1))
            high = int(match.group(2) or low)
            if not 1 <= low <= high <= 65535:
                raise ValueError(
                    f"{entry!r}: ports are 1-65535, and a range's first port is not above its last"
                )
            ranges.append((low, high))
        return cls(tuple(ranges), ", ".join(entries))
