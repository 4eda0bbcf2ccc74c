"""Callgrind's client requests (zero the counts, dump them under a label) from Python.

valgrind's <valgrind/callgrind.h> macros are a few inline x86-64 instructions that
are a no-op on the CPU and a request to valgrind under it. Python cannot emit them,
so this module writes that instruction sequence into one executable page and calls
it through ctypes: no compiler, no C extension. Outside valgrind (or on another
architecture, where `available()` is False) every call does nothing.

Each callgrind bench (http_instructions, store_add_instructions, group_add_instructions)
brackets each measured loop with zero() and dump(label) through count_phases,
so one run under `valgrind --tool=callgrind` counts every phase separately and
the interpreter's start-up and imports are never counted.
"""

from __future__ import annotations

import ctypes
import gc
import mmap
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

# unsigned long request(unsigned long *args): rax = args, rdx = default (0), then
# valgrind's "special instruction preamble" (rol rdi by 3, 13, 61, 51: 128 bits,
# so rdi is unchanged) and `xchg rbx, rbx`; valgrind puts its answer in rdx.
_AMD64 = bytes.fromhex(
    "53"  # push rbx
    "4889f8"  # mov rax, rdi
    "31d2"  # xor edx, edx
    "48c1c703"
    "48c1c70d"
    "48c1c73d"
    "48c1c733"  # rol rdi, 3 / 13 / 61 / 51
    "4887db"  # xchg rbx, rbx
    "4889d0"  # mov rax, rdx
    "5b"  # pop rbx
    "c3"  # ret
)
_TOOL_BASE = (ord("C") << 24) | (ord("T") << 16)  # VG_USERREQ_TOOL_BASE('C','T')
_DUMP_STATS_AT = _TOOL_BASE + 3
_ZERO_STATS = _TOOL_BASE + 1
_START_INSTRUMENTATION = _TOOL_BASE + 4
_RUNNING_ON_VALGRIND = 0x1001

_Args = ctypes.c_ulong * 6
_request: Callable[[ctypes.Array[ctypes.c_ulong]], int] | None = None
_page: mmap.mmap | None = None


def _load() -> Callable[[ctypes.Array[ctypes.c_ulong]], int] | None:
    global _request, _page
    if _request is None and platform.machine() in ("x86_64", "AMD64"):
        _page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        _page.write(_AMD64)
        address = ctypes.addressof(ctypes.c_char.from_buffer(_page))
        prototype = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.POINTER(ctypes.c_ulong))
        _request = prototype(address)
    return _request


def _call(code: int, arg: int = 0) -> int:
    request = _load()
    return 0 if request is None else int(request(_Args(code, arg, 0, 0, 0, 0)))


def available() -> bool:
    """True when this process runs under valgrind."""
    return _call(_RUNNING_ON_VALGRIND) > 0


def start() -> None:
    """Callgrind: start instrumenting, for a run under --instr-atstart=no, whose
    imports then run several times faster (CALLGRIND_START_INSTRUMENTATION)."""
    _call(_START_INSTRUMENTATION)


def zero() -> None:
    """Callgrind: forget every count so far (CALLGRIND_ZERO_STATS)."""
    _call(_ZERO_STATS)


def dump(label: str) -> None:
    """Callgrind: write the counts since the last zero or dump to a new file, its
    `desc: Trigger:` line naming `label` (CALLGRIND_DUMP_STATS_AT)."""
    text = ctypes.create_string_buffer(label.encode("ascii"))
    _call(_DUMP_STATS_AT, ctypes.addressof(text))


def count_phases(
    phases: dict[str, Callable[[], object]],
    n: int,
    warmup: int,
    freeze_heap: bool = False,
    before_each: Callable[[], object] | None = None,
) -> None:
    """The child's side of every callgrind bench: warm each phase up, then count each
    apart (zero, `n` calls, dump under its name), instrumenting from the first only.

    freeze_heap: collect and freeze what the warm-up made, so a full collection, which
    walks the whole heap (tens of millions of instructions), cannot land in a phase.
    before_each: run before each phase's zero, not counted (a WAL emptied, say)."""
    for call in phases.values():
        for _ in range(warmup):
            call()
    if freeze_heap:
        gc.collect()
        gc.freeze()
    start()
    for name, call in phases.items():
        if before_each is not None:
            before_each()
        zero()
        for _ in range(n):
            call()
        dump(name)


# The benches that count under callgrind (http_instructions, store_add_instructions)
# run themselves as a child under valgrind and read its labelled dumps back.
_TRIGGER = re.compile(r"^desc: Trigger: Client Request: (\S+)$", re.M)
_SUMMARY = re.compile(r"^summary: (\d+)$", re.M)


def run_child(module: str, args: list[str], keep: Path | None, expect: str) -> dict[str, int]:
    """Run `python -m module --child *args` under callgrind (counting from start(), not
    from the interpreter's start-up) and return the instructions of each labelled dump;
    callgrind's files stay in `keep` when given. `expect`: a label the child must dump."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    outdir = keep or Path(tempfile.mkdtemp(prefix="spool-callgrind-"))
    outdir.mkdir(parents=True, exist_ok=True)
    command = [
        valgrind,
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={outdir}/callgrind.out",
        sys.executable,
        "-m",
        module,
        "--child",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"the run under callgrind failed ({done.returncode})")
    counts = read_dumps(outdir)
    if keep is None:
        shutil.rmtree(outdir, ignore_errors=True)
    if expect not in counts:
        raise SystemExit("callgrind wrote no labelled dumps: is this x86-64?")
    return counts


def read_dumps(outdir: Path) -> dict[str, int]:
    """Instructions counted in each labelled dump callgrind wrote."""
    counts: dict[str, int] = {}
    for path in sorted(outdir.glob("callgrind.out*")):
        text = path.read_text(errors="replace")
        label, summary = _TRIGGER.search(text), _SUMMARY.search(text)
        if label and summary:
            counts[label.group(1)] = int(summary.group(1))
    return counts


def per_request(counts: dict[str, int], n: int) -> dict[str, float]:
    """Instructions per call of each phase of `n` calls, less the empty loop's."""
    empty = counts.get("empty", 0)
    return {name: (total - empty) / n for name, total in counts.items() if name != "empty"}
