"""docs/handlers.md's first sample names nothing it does not import or define.

Found as a new user: `charge_invoice` called `billing.charge(...)` with `billing`
defined nowhere and not said to be the reader's own client. Pasted as written it
imported fine, and every job then failed with NameError and retried, six times over
backoff. The sample now imports it from the reader's module (a missing module stops
`spool worker` at start, with one line naming it); tests/test_handlers_docs.py
supplies that module and runs the sample.
"""

from __future__ import annotations

import ast
import builtins

from tests.test_handlers_docs import python_blocks


def _unbound_names(source: str) -> set[str]:
    """Names the code reads that it never imports, defines or assigns."""
    tree = ast.parse(source)
    bound = set(dir(builtins))
    read: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
    return read - bound


def test_the_first_sample_says_where_every_name_it_uses_comes_from() -> None:
    [first] = [b for b in python_blocks() if '@handler("charge_invoice"' in b]
    assert _unbound_names(first) == set()
    assert "from myapp.billing import billing" in first  # the reader's, named as such
