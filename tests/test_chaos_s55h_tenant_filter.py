"""Chaos on the local command line (s55, helper H): --tenant of the commands that read
or act on jobs (status, jobs, cancel, dlq list, dlq redrive) given a name no tenant can
have: empty (`--tenant "$TENANT"` with the variable unset), with a space, too long.

Before, only `spool enqueue --tenant` (and `spool top --tenant`) held the name to the
pattern API keys' tenants follow; the others took any text and filtered by it, so
`spool jobs --tenant ''` printed "0 job(s)" and `spool dlq redrive --all --tenant ''`
"redriven 0 job(s)", both exit 0, as if the tenant were real and had nothing, and
status / cancel / redrive of a real job said "not found". Now each is a usage error
(exit 2) in one line, before the store is opened."""

from __future__ import annotations

from pathlib import Path

import pytest

from local import cli

JOB = "j_" + "1" * 32
COMMANDS = {
    "jobs": ["jobs"],
    "status": ["status", JOB],
    "cancel": ["cancel", JOB],
    "dlq list": ["dlq", "list"],
    "dlq redrive one": ["dlq", "redrive", JOB],
    "dlq redrive all": ["dlq", "redrive", "--all"],
}


@pytest.mark.parametrize("name", ["", "two words", "x" * 65, "a/b"], ids=repr)
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_tenant_name_no_key_can_have_is_a_usage_error(
    command: str,
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPOOL_URL", raising=False)
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{tmp_path}/s.db")
    monkeypatch.setenv("SPOOL_DEMO_HANDLERS", "true")
    assert cli.main(["enqueue", "echo"]) == 0
    capsys.readouterr()
    assert cli.main([*COMMANDS[command], "--tenant", name]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "a tenant is 1 to 64 letters" in err
    assert err.count("\n") == 1, err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_tenant_name_a_key_can_have_is_still_taken(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPOOL_URL", raising=False)
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{tmp_path}/s.db")
    monkeypatch.setenv("SPOOL_DEMO_HANDLERS", "true")
    assert cli.main(["enqueue", "echo", "--tenant", "acme.eu:1"]) == 0
    # 0 (a list), or 1: the job named is not this tenant's / not dead: never a usage error.
    assert cli.main([*COMMANDS[command], "--tenant", "acme.eu:1"]) in (0, 1)
