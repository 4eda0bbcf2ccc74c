"""The AWS stack as a security reviewer reads it: data that survives a slip, transport
that is TLS only, and the gateway's own answers as guarded as the app's.

These read the generated templates (infra/resources.json, the merge template `make
package` adds to Chalice's, and infra/data-stack.json for `chalice deploy`);
tests/test_infra.py runs cfn-lint on both and checks they are up to date.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infra import generate

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ("resources.json", "data-stack.json")


def _document(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((ROOT / "infra" / name).read_text())
    return document


def _of_type(document: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in document["Resources"].items() if v.get("Type") == type_}


def _ref_names(value: Any) -> set[str]:
    """Logical ids a value names by Ref or Fn::GetAtt."""
    if isinstance(value, dict):
        if "Ref" in value:
            return {value["Ref"]}
        if "Fn::GetAtt" in value:
            return {value["Fn::GetAtt"][0]}
        return set().union(*(_ref_names(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_ref_names(v) for v in value)) if value else set()
    return set()


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_table_refuses_deletion_and_is_kept(name: str) -> None:
    """A `DeleteTable` by hand, a script or another stack's mistake would take every
    tenant's jobs with it: the table refuses it until someone turns protection off."""
    tables = _of_type(_document(name), "AWS::DynamoDB::Table")
    assert tables
    for logical_id, table in tables.items():
        assert table["Properties"].get("DeletionProtectionEnabled") is True, logical_id
        assert table["DeletionPolicy"] == "Retain", logical_id
        assert table["UpdateReplacePolicy"] == "Retain", logical_id


def test_the_docs_say_how_to_drop_the_tables_deletion_protection() -> None:
    text = (ROOT / "docs" / "aws.md").read_text()
    assert "DeletionProtectionEnabled" in text
    assert "--no-deletion-protection-enabled" in text  # the one command that turns it off


def _tls_denies(document: dict[str, Any], policy_type: str, target_key: str) -> dict[str, Any]:
    """Target logical id -> the Deny statement refusing plain HTTP on it."""
    found: dict[str, Any] = {}
    for policy in _of_type(document, policy_type).values():
        props = policy["Properties"]
        for statement in props["PolicyDocument"]["Statement"]:
            if statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}:
                assert statement["Effect"] == "Deny"
                assert statement["Principal"] == "*"
                for target in _ref_names(props[target_key]):
                    found[target] = statement
    return found


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_queue_refuses_plain_http(name: str) -> None:
    """Without a policy SQS answers a request over http:// (a message body, a receipt
    handle in clear); the dead-letter queue holds the same job ids."""
    document = _document(name)
    queues = set(_of_type(document, "AWS::SQS::Queue"))
    assert {"JobsQueue", "JobsDeadLetterQueue"} <= queues
    denies = _tls_denies(document, "AWS::SQS::QueuePolicy", "Queues")
    assert set(denies) == queues
    for statement in denies.values():
        assert statement["Action"] == "sqs:*"  # a Deny: narrowing everything is the point
    # The policies grant nothing: access stays with the roles' own statements.
    for policy in _of_type(document, "AWS::SQS::QueuePolicy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Deny"
        # Kept with the queues, as the bucket's policy is with the bucket: deleted with
        # the stack, it would leave the kept queues answering plain HTTP.
        assert policy["DeletionPolicy"] == "Retain"


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_bucket_refuses_plain_http(name: str) -> None:
    document = _document(name)
    buckets = set(_of_type(document, "AWS::S3::Bucket"))
    assert buckets
    assert set(_tls_denies(document, "AWS::S3::BucketPolicy", "Bucket")) == buckets


def test_the_gateways_own_answers_carry_the_pages_security_headers() -> None:
    """API Gateway answers some requests to /ui itself (403 without a token, 429 over
    the stage's throttle, 5xx): a browser showing one must get the same refusal to be
    framed, sniffed or scripted that the dashboard's own answers carry."""
    from chalicelib.ui.page import SECURITY_HEADERS

    responses = _document("resources.json")["Resources"]["RestAPI"]["Properties"]["DefinitionBody"][
        "x-amazon-apigateway-gateway-responses"
    ]
    assert {"DEFAULT_4XX", "DEFAULT_5XX", "MISSING_AUTHENTICATION_TOKEN", "THROTTLED"} <= set(
        responses
    )
    for kind, response in responses.items():
        headers = {
            k.removeprefix("gatewayresponse.header."): v
            for k, v in response["responseParameters"].items()
        }
        assert set(SECURITY_HEADERS) <= set(headers), kind
        for value in headers.values():
            # A static value is one quoted literal; a quote inside would end it early.
            assert value.startswith("'") and value.endswith("'") and "'" not in value[1:-1]
        policy = headers["Content-Security-Policy"].strip("'")
        # An error body is never a page: a sandbox runs no script, submits no form and
        # has no origin to act as, whatever a browser makes of it.
        assert "sandbox" in [d.strip() for d in policy.split(";")], kind
        assert headers["X-Content-Type-Options"] == "'nosniff'", kind
        assert headers["X-Frame-Options"] == "'DENY'", kind
    assert generate.GATEWAY_HEADERS["X-Content-Type-Options"] == "nosniff"
