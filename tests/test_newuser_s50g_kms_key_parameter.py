"""`ApiKeysKmsKeyArn` takes a key's ARN, and the stack refuses anything else at deploy.

The parameter becomes the Resource of the API role's `kms:Decrypt` grant. docs/aws.md
encrypts the parameter with `--key-id alias/YOUR-KEY`, and the natural next step was
to deploy with that same alias: as a Resource, `alias/YOUR-KEY` (or a bare key id) is
no ARN and the role's policy fails at deploy with IAM's message, and an alias ARN is
accepted but never matches (KMS authorizes Decrypt against the key's ARN, not an
alias's), so every request answered 503 `keys_unavailable` with nothing in the stack
saying why. The parameter now has an AllowedPattern: empty (the aws/ssm key) or a
key ARN, in any partition; CloudFormation matches the whole value.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"


def _parameter() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((ROOT / "infra" / "resources.json").read_text())
    found: dict[str, Any] = document["Parameters"]["ApiKeysKmsKeyArn"]
    return found


@pytest.mark.parametrize(
    "value",
    [
        "",  # the default: aws/ssm
        f"arn:aws:kms:us-east-1:123456789012:key/{KEY_ID}",
        "arn:aws:kms:eu-west-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab",
        f"arn:aws-us-gov:kms:us-gov-west-1:123456789012:key/{KEY_ID}",
        f"arn:aws-cn:kms:cn-north-1:123456789012:key/{KEY_ID}",
    ],
)
def test_a_key_arn_or_nothing_is_accepted(value: str) -> None:
    parameter = _parameter()
    assert re.fullmatch(parameter["AllowedPattern"], value), value
    assert re.fullmatch(parameter["AllowedPattern"], parameter["Default"])


@pytest.mark.parametrize(
    "value",
    [
        "alias/YOUR-KEY",  # what docs/aws.md gives put-parameter
        "arn:aws:kms:us-east-1:123456789012:alias/YOUR-KEY",
        KEY_ID,
        f"arn:aws:kms:us-east-1:123456789012:key/{KEY_ID} ",
        "arn:aws:kms:us-east-1:123456789012:key/*",
    ],
)
def test_an_alias_or_a_bare_id_is_refused_at_deploy(value: str) -> None:
    parameter = _parameter()
    assert "AllowedPattern" in parameter
    assert not re.fullmatch(parameter["AllowedPattern"], value), value
    assert "key ARN" in parameter["ConstraintDescription"]
