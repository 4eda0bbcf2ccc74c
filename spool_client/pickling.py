"""What a pickled Client or AsyncClient carries: its URL, key and options, no socket.

multiprocessing hands a pool's workers their arguments pickled, and a client passed
to one raised `TypeError: cannot pickle '_thread.RLock' object` from deep inside
httpx's connection pool. Connections belong to the process (and, for AsyncClient,
the event loop) that opened them, so none is carried: the copy is a new client made
from the same URL, key, timeout, retry policy, batch size and answer bound, which
opens its own connections when first used. A client given `http=` (the caller's
httpx client: proxies, TLS, a transport) is refused with a TypeError saying what to
do, since what made that client cannot be carried.
"""

from __future__ import annotations

from dataclasses import fields
from functools import partial
from typing import Any

from spool_client.calls import Options

# Options' fields that are no argument of the clients' but worked out from them:
# default_url (no URL given, SPOOL_URL unset) is not carried, since the copy is made
# with the URL the client holds.
NOT_ARGUMENTS = frozenset({"default_url"})


def reduced(client: Any) -> tuple[Any, tuple[()]]:
    """`client.__reduce__`'s answer: a call that makes the same client again, from
    the fields of calls.Options (what both clients are built from, each an argument
    of theirs by the same name) as the client holds them."""
    made: Any = type(client)  # Client or AsyncClient, whose arguments these are
    kind = made.__name__
    if not client._own_http:
        raise TypeError(
            f"a {kind} made with http= cannot be pickled: the httpx client it was given "
            "holds connections and settings that cannot be carried to another process; "
            f"pass url and key instead and make the {kind} with http= in that process"
        )
    arguments = {
        field.name: getattr(client, field.name)
        for field in fields(Options)
        if field.name not in NOT_ARGUMENTS
    }
    return partial(made, **arguments), ()
