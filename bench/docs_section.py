"""Replace one bench's section of docs/benchmarks.md, leaving every other section as it is.

A section runs from `<!-- section:NAME -->` to `<!-- /section:NAME -->`; a bench whose
section is not there yet appends it at the end.
"""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def markers(name: str) -> tuple[str, str]:
    return f"<!-- section:{name} -->", f"<!-- /section:{name} -->"


def write_section(name: str, text: str, doc_path: Path = DOC) -> None:
    """`text` must start and end with the section's markers (see `markers`)."""
    start_mark, end_mark = markers(name)
    doc = doc_path.read_text()
    if start_mark in doc:
        start, end = doc.index(start_mark), doc.index(end_mark) + len(end_mark)
        doc = doc[:start] + text + doc[end:]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    doc_path.write_text(doc)
