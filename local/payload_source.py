"""`spool enqueue --payload @FILE` and `--payload -`: a job's JSON read from a file or
from standard input, as curl's `-d @file` reads a body.

Why: a payload given in the argument itself is bounded by the kernel's limit on one
argument (128 KiB on Linux), below the 256 KiB body a server takes by default
(SPOOL_MAX_BODY_BYTES). `--payload "$(cat job.json)"`, which the command used to advise,
failed in the shell for a bigger file ("Argument list too long") before `spool` ran,
so such a job could not be enqueued from the command line at all. Neither form is
ambiguous: no JSON text begins with `@`, and `-` alone is not JSON.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import BinaryIO

from local.cli_errors import UsageError

# What one payload read here may hold: far above any body a server takes, so a payload
# is refused by the server's or the store's own rules, while `--payload @/dev/zero` or
# `yes | spool enqueue ... --payload -` ends instead of filling the memory.
MAX_BYTES = 64 * 1024 * 1024
STDIN = "standard input"


def resolve(args: argparse.Namespace, stdin: BinaryIO | None = None) -> None:
    """Replace an `@FILE` or `-` --payload on `args` with the text it names, once, before
    the local or remote enqueue reads it (standard input can be read only once), and
    record where it came from as `args.payload_source` (None: the argument itself) for
    the error that names what to fix."""
    value: str = args.payload
    args.payload_source = None
    if value == "-":
        stream = stdin if stdin is not None else sys.stdin.buffer
        if stream.isatty():
            raise UsageError(
                "--payload - reads the job's JSON from standard input, which is a terminal",
                "Pipe or redirect the JSON in: spool enqueue TYPE --payload - < job.json",
            )
        args.payload, args.payload_source = _text(_read(stream, STDIN), STDIN), STDIN
    elif value.startswith("@"):
        path = value[1:]
        if not path:
            raise UsageError("--payload @ names no file", "Name the file: --payload @job.json")
        args.payload, args.payload_source = _text(_read_file(path), path), path


def _read_file(path: str) -> bytes:
    try:
        with open(os.path.expanduser(path), "rb") as stream:
            return _read(stream, path)
    except FileNotFoundError:
        raise UsageError(
            f"--payload @{path}: no such file",
            "Check the path (it is read from the working directory)",
        ) from None
    except IsADirectoryError:
        raise UsageError(f"--payload @{path} is a directory", "Name a file of JSON") from None
    except OSError as exc:
        raise UsageError(
            f"--payload @{path} cannot be read ({exc.strerror or exc})",
            "Check the file and its permissions",
        ) from None


def _read(stream: BinaryIO, source: str) -> bytes:
    data = stream.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise UsageError(
            f"--payload: {source} holds more than {MAX_BYTES // (1024 * 1024)} MiB",
            "A job's payload is JSON to run it, not the data itself: store the data "
            "(a blob, a bucket) and put its key in the payload",
        )
    return data


def _text(data: bytes, source: str) -> str:
    """The bytes as text: UTF-8 without a byte order mark, as a request body must be."""
    if data.startswith(b"\xef\xbb\xbf"):
        raise UsageError(
            f"--payload: {source} begins with a byte order mark",
            "Save it as UTF-8 without a BOM (JSON must not have one)",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"--payload: {source} is not UTF-8 text (byte {exc.start})",
            "Save it as UTF-8",
        ) from None
