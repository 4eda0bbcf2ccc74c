"""A bucket the stack keeps when it is deleted keeps its TLS-only policy too.

docs/aws.md promises "the encrypted, private, TLS-only bucket", and both stacks keep
the bucket (DeletionPolicy Retain: it holds payloads and results of jobs the kept
table still names). Its TLS-only guard is a separate resource, the bucket policy,
which CloudFormation deleted with the stack: the bucket that stayed behind, with
every tenant's offloaded payloads in it, then answered plain HTTP requests. Checked
on infra/resources.json (what `make package` merges into the stack; chalice's merge
keeps a resource's DeletionPolicy, as the bucket's shows) and infra/data-stack.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ["resources.json", "data-stack.json"]


def _resources(name: str) -> dict[str, dict[str, Any]]:
    document: dict[str, Any] = json.loads((ROOT / "infra" / name).read_text())
    found: dict[str, dict[str, Any]] = document["Resources"]
    return found


@pytest.mark.parametrize("name", TEMPLATES)
def test_the_kept_buckets_tls_only_policy_is_kept_with_it(name: str) -> None:
    resources = _resources(name)
    policies = {k: v for k, v in resources.items() if v.get("Type") == "AWS::S3::BucketPolicy"}
    assert policies, name
    for logical_id, policy in policies.items():
        bucket = resources[policy["Properties"]["Bucket"]["Ref"]]
        assert bucket["DeletionPolicy"] == "Retain"  # the bucket stays...
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(s["Sid"] == "TlsOnly" and s["Effect"] == "Deny" for s in statements)
        # ...and so does what makes it TLS-only, on deletion and on a replacement.
        assert policy.get("DeletionPolicy") == "Retain", (name, logical_id)
        assert policy.get("UpdateReplacePolicy") == "Retain", (name, logical_id)
