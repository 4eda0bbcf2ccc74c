"""How many values a JSON body holds, counted from its bytes before it is parsed.

json.loads makes a Python object of every value, and a small value costs far more
as an object than as text: `{}` is 3 bytes of text and about 90 bytes of dict (and
list slot), `[]` about 80, `"ab"` about 60. A body of many small values therefore
took up to about 30 times its size in memory before anything in it could be refused
(a 10 MB body of `{}`s: about 280 MB, per request thread at once). Counting first
bounds that: past a count, the body is refused with no object built, and what a
body can still cost is about its count times 90 bytes plus a few times its size
(its text, and strings, which cost about what they take as text).

The count is exact for JSON: the top-level value, plus every element of an array and
every member of an object (one comma each after the first); what is inside a string
never counts. Text that is not JSON is counted as well as it can be (the parser
refuses it after); a string never closed counts what follows it, so such a body may
be refused as too many values rather than as not JSON.
"""

from __future__ import annotations

import re

# SPOOL_MAX_BODY_VALUES' default: the most values the default 256 KiB body can hold
# (every value takes at least two bytes, itself and a comma: `[0,0,...]`), so nothing
# that fits the default body limit is refused for its count. A body of that many at
# 90 bytes each is about 12 MB, whatever SPOOL_MAX_BODY_BYTES allows.
DEFAULT_MAX_BODY_VALUES = 131_072
# The setting's range: at most what the 10 MiB ceiling of SPOOL_MAX_BODY_BYTES can hold.
MAX_BODY_VALUES_RANGE = (1024, 5 * 1024 * 1024)
SETTING = "SPOOL_MAX_BODY_VALUES"


def too_many_values(limit: int) -> str:
    """The 413's words for a body of more than `limit` values."""
    return (
        f"request body holds more than {limit} JSON values (arrays, objects, and the "
        "elements and members in them): send fewer in one request, e.g. a smaller batch "
        f"or a payload in bigger values ({SETTING} is the server's limit)"
    )


# One token the count looks at: a string (group 1, escapes and all, in the unrolled
# form: no backtracking per character), an array or object holding nothing (group 2:
# it has no first element to count), or a bracket or comma that starts one (group 3).
_TOKEN = re.compile(rb'("[^"\\]*(?:\\.[^"\\]*)*")|([\[{][ \t\r\n]*[\]}])|([\[{,])', re.DOTALL)
_COUNTED = 3


def values_over(body: bytes, limit: int) -> bool:
    """Whether the JSON text `body` holds more than `limit` values (module docstring).

    Without any string skipped, arrays, objects and commas bound the count from
    above: nearly every body is answered by three counts run in C. Only one whose bound
    is over the limit is read token by token, up to the first value past the limit:
    each token is let go as soon as it is looked at (re.sub of a body of `{}`s kept a
    piece for each, 60 times the body), and a body of fewer values has at most about
    four tokens for each (a string as a name and as a value, an empty array or object)."""
    if 1 + body.count(b",") + body.count(b"[") + body.count(b"{") <= limit:
        return False
    count = 1  # the top-level value
    for token in _TOKEN.finditer(body):
        if token.lastindex == _COUNTED:
            count += 1
            if count > limit:
                return True
    return count > limit
