"""SQLite on a disk smaller than the WAL's checkpoint mark.

The store checkpoints its WAL every CHECKPOINT_PAGES frames (40 MB). On a 16 MB
volume, `spool serve` under a few seconds of load grew the WAL to the whole disk
(16.7 MB of WAL beside a 4 KB database file, 1,370 small jobs), and from then on
every write was refused as "the disk is full" for good: the checkpoint that would
have let SQLite write the WAL again needed room in the database file to copy the
pages back, and there was none. Now the mark is also a share of the room the WAL
may use, so the WAL is copied back and started again long before the disk fills.

The disk is a real small tmpfs, mounted in a user and mount namespace of the test's
own (`unshare --user --map-root-user --mount`), so no privilege is needed and
nothing outside the child sees it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.procs import ROOT, guarded_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

DISK = "12m"
BATCHES = 300  # 3,000 jobs of 1 KB: their rows fit the disk several times over

CHILD = textwrap.dedent(
    """
    import sys
    from chalicelib.clock import SystemClock
    from chalicelib.errors import StoreUnavailable
    from chalicelib.storage import open_store
    from tests.factories import new_job

    store = open_store("sqlite:///" + sys.argv[1] + "/spool.db", SystemClock())
    for batch in range(int(sys.argv[2])):
        try:
            store.add([new_job(store.clock, payload={"pad": "x" * 1000}) for _ in range(10)])
        except StoreUnavailable as exc:
            print(f"refused at batch {batch}: {exc.message}")
            sys.exit(3)
    print("stored", sum(store.counts().values()))
    store.close()
    """
)


def _namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "true"],
        capture_output=True,
        timeout=30,
    )
    return probe.returncode == 0


def test_the_wal_never_fills_a_disk_smaller_than_its_mark(tmp_path: Path) -> None:
    if not _namespaces_work():
        pytest.skip("needs unshare with user namespaces, to mount a small tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    shell = (
        f'mount -t tmpfs -o size={DISK} tmpfs "$1" && exec "{sys.executable}" "$2" "$1" {BATCHES}'
    )
    done = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            shell,
            "sh",
            str(disk),
            str(script),
        ],
        cwd=ROOT,
        env=guarded_env(PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=100,
    )
    # Before: exit 3, "refused at batch 1xx: the disk holding the SQLite database is full".
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"stored {BATCHES * 10}"
