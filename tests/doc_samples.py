"""The Python blocks of the pages a new user copies from, and how each is to be run.

Pages: README.md, client/README.md and docs/*.md. A block's mark is an HTML comment
on the last non-blank line before its fence (the rendered page does not show it):

- none: a program. tests/test_doc_samples.py runs it as written in a fresh
  interpreter against a real `spool serve` (SQLite, over HTTP), SPOOL_URL and
  SPOOL_API_KEY set as the pages tell the reader to set them. So a block added
  without a mark is run.
- `<!-- handler module -->`: code for the module SPOOL_HANDLERS names. The page's
  blocks so marked, in page order, are that one module (the later ones continue the
  first, as the page reads), loaded by real workers and servers in
  tests/test_doc_samples.py and tests/test_handlers_docs.py, which run its handlers.
- `<!-- not run: REASON -->`: an excerpt nobody runs alone (a signature, a piece
  of a larger program); REASON says why, and cannot be empty.

Any other comment there is refused, so a misspelt mark does not quietly skip a block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON_FENCES = ("python", "py", "python3")
HANDLER_MODULE = "handler module"
NOT_RUN = "not run"
_FENCE = re.compile(r"^```([\w+-]*)[ \t]*$")
_MARK = re.compile(r"^<!--\s*(.*?)\s*-->$")


@dataclass(frozen=True)
class Block:
    """One Python block: where it is, its mark (None, HANDLER_MODULE, NOT_RUN), why."""

    page: Path
    line: int  # the opening fence's, 1-based
    code: str
    mark: str | None
    reason: str = ""

    @property
    def name(self) -> str:
        """`docs/client.md:43`, as a test id and in a failure."""
        return f"{shown(self.page)}:{self.line}"


def shown(page: Path) -> str:
    """PAGE as the checkout names it (`docs/client.md`)."""
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else str(page)


def pages() -> list[Path]:
    """Every page whose samples a reader may copy."""
    found = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    client_readme = ROOT / "client" / "README.md"
    return [*found, client_readme] if client_readme.exists() else found


def _mark(lines: list[str], fence: int) -> tuple[str | None, str]:
    """The mark on the last non-blank line before line index FENCE, and its reason.
    ValueError for a comment that is no known mark."""
    before = fence - 1
    while before >= 0 and not lines[before].strip():
        before -= 1
    found = _MARK.match(lines[before].strip()) if before >= 0 else None
    if found is None:
        return None, ""
    text = found.group(1)
    if text == HANDLER_MODULE:
        return HANDLER_MODULE, ""
    kind, colon, reason = text.partition(":")
    if kind.strip() == NOT_RUN and colon and reason.strip():
        return NOT_RUN, reason.strip()
    raise ValueError(
        f"line {before + 1}: {lines[before].strip()!r} is no sample mark: write "
        f"<!-- {HANDLER_MODULE} --> or <!-- {NOT_RUN}: REASON --> (tests/doc_samples.py)"
    )


def page_blocks(page: Path) -> list[Block]:
    """PAGE's Python blocks in order, with their marks (ValueError naming a bad one)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opened = _FENCE.match(lines[index])
        if opened is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        if opened.group(1).lower() in PYTHON_FENCES:
            try:
                mark, reason = _mark(lines, index)
            except ValueError as exc:
                raise ValueError(f"{shown(page)}: {exc}") from None
            code = "".join(line + "\n" for line in lines[index + 1 : end])
            blocks.append(Block(page, index + 1, code, mark, reason))
        index = end + 1
    return blocks


def all_blocks() -> list[Block]:
    return [block for page in pages() for block in page_blocks(page)]


def programs() -> list[Block]:
    """The unmarked blocks: each runs alone."""
    return [block for block in all_blocks() if block.mark is None]


def handler_module(page: Path) -> str:
    """PAGE's handler-module blocks as the one module they make, in page order."""
    return "\n\n".join(b.code for b in page_blocks(page) if b.mark == HANDLER_MODULE)


def printed_claims(code: str) -> list[str]:
    """What a `print(...)  # TEXT` comment says is printed (TEXT without an ellipsis)."""
    claims = re.findall(r"print\(.*\)\s+# (.+)$", code, flags=re.M)
    return [claim.strip() for claim in claims if "..." not in claim]
