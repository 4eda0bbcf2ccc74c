"""The AWS template: `make package` builds it, linters accept it, and it keeps its promises.

Nothing here talks to AWS: every subprocess gets an AWS endpoint on a closed
local port besides the guard variables, and the linters also get HTTP proxies
on a closed port, so a tool that tried to reach out would fail here instead.
`make package` installs the Lambda wheels that `make lambda-wheels` fetched
before pytest (requirements-lambda.txt, `--no-index`); no test reaches the
registry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from chalicelib.storage.dynamodb_schema import table_definition
from chalicelib.timebounds import MAX_DELAY_SECONDS
from infra import generate
from infra.finalize import finalize
from infra.lambda_target import ARCHITECTURES, DEFAULT_ARCH, RUNTIME
from tests.procs import guarded_env

ROOT = Path(__file__).resolve().parent.parent
SAM = ROOT / ".tools" / "sam-venv" / "bin" / "sam"
CFN_LINT = Path(sys.executable).parent / "cfn-lint"
STAGES = ("dev", "prod")
ROLE_OF = {"APIHandler": "api", "RunJobs": "worker", "DrainDue": "scheduler"}
ROLE_IDS = {"APIHandler": "ApiHandlerRole", "RunJobs": "RunJobsRole", "DrainDue": "DrainDueRole"}
DATA = ("JobsTable", "JobsQueue", "PayloadBucket")
LOG_GROUPS = {f: f"{f}LogGroup" for f in ROLE_OF}


def offline_env() -> dict[str, str]:
    return guarded_env(
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
        # sam checks PyPI for a newer version after a command: send that nowhere.
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        NO_PROXY="127.0.0.1,localhost",
        SAM_CLI_TELEMETRY="0",
    )


@pytest.fixture(scope="module", params=STAGES)
def packaged(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `make package` produces for one stage."""
    out = tmp_path_factory.mktemp(f"package-{request.param}")
    # -o: never let a stale venv stamp reinstall packages from inside a test.
    env = {k: v for k, v in offline_env().items() if not k.endswith("_PROXY")}
    result = subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", "-o", ".tools/lambda-wheels/lambda/.fetched",
         "package", f"STAGE={request.param}",
         f"PACKAGE_DIR={os.path.relpath(out, ROOT)}"],  # relative, as the default `out`
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    assert (out / "sam.json").is_file() and (out / "deployment.zip").is_file()
    return out / "sam.json"


def test_lambda_package_holds_the_runtime_and_nothing_local(packaged: Path) -> None:
    with zipfile.ZipFile(packaged.parent / "deployment.zip") as archive:
        names = archive.namelist()
    tops = {name.split("/")[0] for name in names}
    # requirements.txt's dependencies (pydantic's compiled core for Linux included)...
    assert {"pydantic", "pydantic_core", "prometheus_client", "cachetools", "croniter"} <= tops
    assert any(n.startswith("pydantic_core/_pydantic_core") and ".so" in n for n in names)
    # ...the app and its library, and none of the local-only code or test tooling.
    assert {"app.py", "chalicelib/api/routes.py", "chalicelib/storage/dynamodb.py"} <= set(names)
    # (chalice/ is Chalice's own small runtime, which every Chalice package carries.)
    assert not tops & {"local", "tests", "bench", "moto", "waitress", "psycopg", "boto3"}
    # Pillow (for resize_image) is about 7.7 MB zipped and bytecode about 2.5 MB: well
    # under Lambda's 50 MB upload limit, and the bound still catches a stray dependency.
    assert (packaged.parent / "deployment.zip").stat().st_size < 20 * 1024 * 1024


@pytest.fixture(scope="module")
def template(packaged: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(packaged.read_text())
    return document


def resources(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v.get("Type") == type_}


def cfn_lint(path: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(CFN_LINT), "--format", "json", str(path)],
        cwd=ROOT, env=offline_env(), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode in (0, 2, 4, 6, 8, 10, 12, 14), result.stderr
    findings: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    return findings


def refs(value: Any) -> set[str]:
    """Logical ids a template value refers to (Ref, Fn::GetAtt, ${Name...} in Fn::Sub)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                found.add(inner)
            elif key == "Fn::GetAtt":
                found.add(inner[0] if isinstance(inner, list) else str(inner).split(".")[0])
            elif key == "Fn::Sub":
                text = inner[0] if isinstance(inner, list) else inner
                for part in str(text).split("${")[1:]:
                    found.add(part.split("}")[0].split(".")[0])
                if isinstance(inner, list):
                    found |= refs(inner[1])
            else:
                found |= refs(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= refs(inner)
    return found


def statements(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every policy statement in the template: role policies and resource policies."""
    out: list[tuple[str, dict[str, Any]]] = []
    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        for policy in props.get("Policies", []) or []:
            if isinstance(policy, dict) and "PolicyDocument" in policy:
                out += [(name, s) for s in policy["PolicyDocument"]["Statement"]]
        if "PolicyDocument" in props:
            out += [(name, s) for s in props["PolicyDocument"]["Statement"]]
    return out


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# -- the files are generated, and up to date ---------------------------------------------


def test_generated_files_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, "infra/generate.py", "--check"],
        cwd=ROOT, env=offline_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_chalice_config_turns_autogen_off_and_names_reviewed_policy_files() -> None:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    assert config["autogen_policy"] is False
    for stage in STAGES:
        functions = config["stages"][stage]["lambda_functions"]
        roles = (("api_handler", "api"), ("run_jobs", "worker"), ("drain_due", "scheduler"))
        for name, role in roles:
            policy_file = functions[name]["iam_policy_file"]
            assert policy_file == f"policy-{stage}-{role}.json"
            assert (ROOT / ".chalice" / policy_file).is_file()


# -- linters -------------------------------------------------------------------------------


def test_cfn_lint_finds_no_errors(packaged: Path) -> None:
    errors = [f for f in cfn_lint(packaged) if f.get("Level") == "Error"]
    assert errors == []


def test_cfn_lint_accepts_the_data_stack() -> None:
    errors = [f for f in cfn_lint(ROOT / "infra" / "data-stack.json") if f.get("Level") == "Error"]
    assert errors == []


def test_cfn_lint_catches_a_broken_template(tmp_path: Path, template: dict[str, Any]) -> None:
    """The lint step can fail: an SQS event source with no queue is an error."""
    broken = json.loads(json.dumps(template))
    del broken["Resources"]["RunJobs"]["Properties"]["Events"]["RunJobsSqsEventSource"][
        "Properties"
    ]["Queue"]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    assert any(f.get("Level") == "Error" for f in cfn_lint(path))


def test_sam_validate_lint(packaged: Path) -> None:
    if not SAM.exists():
        reason = "the SAM CLI is missing: `make tools` (infra/install-sam.sh) puts it in .tools/"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; make test installs it in CI")
        pytest.skip(reason)
    result = subprocess.run(
        [str(SAM), "validate", "--lint", "--template-file", str(packaged), "--region",
         "us-east-1"],
        cwd=packaged.parent, env=offline_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


# -- invariants -----------------------------------------------------------------------------


def test_no_wildcard_actions_and_no_unscoped_resources(template: dict[str, Any]) -> None:
    found = statements(template)
    assert len(found) >= 4 * len(ROLE_OF)  # every role's statements were seen
    for name, statement in found:
        actions = as_list(statement.get("Action", []))
        if statement["Effect"] == "Allow":
            assert all("*" not in a for a in actions), (name, actions)
            assert all(r != "*" for r in as_list(statement["Resource"])), name
        else:  # a deny may be broad: it only takes access away
            assert statement["Effect"] == "Deny"


def test_no_role_carries_a_managed_policy_but_api_gateways_logging_role(
    template: dict[str, Any],
) -> None:
    """The check above reads inline statements only. A managed policy on a function's
    role (AWSLambdaBasicExecutionRole, say) would bring back logs:CreateLogGroup on `*`,
    so Lambda could make a log group without a retention. The one managed policy is the
    one AWS prescribes for the region's API Gateway logging role, which only API Gateway
    may assume (docs/aws.md, Logs)."""
    roles = resources(template, "AWS::IAM::Role")
    assert set(ROLE_IDS.values()) | {"ApiGatewayLogsRole"} <= set(roles)
    for name, role in roles.items():
        managed = role["Properties"].get("ManagedPolicyArns", [])
        if name != "ApiGatewayLogsRole":
            assert managed == [], name
            continue
        assert managed == [
            {
                "Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/"
                "AmazonAPIGatewayPushToCloudWatchLogs"
            }
        ]
        trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert [s["Principal"] for s in trust] == [{"Service": "apigateway.amazonaws.com"}]
    for name, function in resources(template, "AWS::Serverless::Function").items():
        assert "Policies" not in function["Properties"], name  # SAM's policy templates


# The statements granting one SSM parameter's read (each with its "...Decrypt" twin).
PARAMETER_GRANTS = {
    "ApiKeys": generate.PARAMETER_ARN,  # the tenant keys
    "SmtpPassword": generate.SMTP_PARAMETER_ARN,
    "Webhooks": generate.WEBHOOKS_PARAMETER_ARN,  # SPOOL_WEBHOOKS' parameter
}


def test_each_function_has_its_own_role_scoped_to_the_data(template: dict[str, Any]) -> None:
    functions = resources(template, "AWS::Serverless::Function")
    assert set(functions) == set(ROLE_OF)
    roles = {refs(f["Properties"]["Role"]).pop() for f in functions.values()}
    assert roles == set(ROLE_IDS.values())  # one role per function
    for function, role_id in ROLE_IDS.items():
        policy = template["Resources"][role_id]["Properties"]["Policies"]
        sids = set()
        for statement in policy[0]["PolicyDocument"]["Statement"]:
            sids.add(statement["Sid"])
            targets = refs(statement["Resource"])
            if statement["Sid"] == "Logs":  # its own log group, and no other
                assert targets == {LOG_GROUPS[function]}, (function, statement)
                assert "logs:CreateLogGroup" not in statement["Action"]
            elif statement["Sid"] in PARAMETER_GRANTS:  # that one parameter (none: no name)
                assert statement["Action"] == ["ssm:GetParameter"]
                assert statement["Resource"] == [PARAMETER_GRANTS[statement["Sid"]]]
            elif statement["Sid"].removesuffix("Decrypt") in PARAMETER_GRANTS:
                # Its value decrypted through SSM only, for that parameter only.
                arn = PARAMETER_GRANTS[statement["Sid"].removesuffix("Decrypt")]
                condition = statement["Condition"]["StringEquals"]
                assert condition["kms:ViaService"] == {
                    "Fn::Sub": "ssm.${AWS::Region}.amazonaws.com"
                }
                assert condition["kms:EncryptionContext:PARAMETER_ARN"] == arn
            else:
                assert len(targets) == 1 and targets <= set(DATA), (function, statement)
        # Only the API function reads the tenant keys; only the worker the SMTP password.
        assert ({"ApiKeys", "ApiKeysDecrypt"} <= sids) == (function == "APIHandler"), function
        smtp = {"SmtpPassword", "SmtpPasswordDecrypt"} <= sids
        assert smtp == (function == "RunJobs"), function
        # The webhook secrets: the API (enqueue's check) and the scheduled function (delivery).
        hooks = {"Webhooks", "WebhooksDecrypt"} <= sids
        assert hooks == (function in ("APIHandler", "DrainDue")), function


def test_every_role_that_reads_objects_may_list_the_bucket_and_no_more(
    template: dict[str, Any],
) -> None:
    """S3 answers a GetObject of a missing key with AccessDenied unless the caller may
    s3:ListBucket: the worker would then retry a job whose payload the lifecycle rule
    deleted to its last attempt instead of burying it as payload_missing."""
    for function, role_id in ROLE_IDS.items():
        policy = template["Resources"][role_id]["Properties"]["Policies"][0]
        by_sid = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
        assert "s3:GetObject" in by_sid["Objects"]["Action"], function
        bucket = by_sid["Bucket"]
        assert bucket["Action"] == ["s3:ListBucket"], function
        assert bucket["Resource"] == [{"Fn::GetAtt": ["PayloadBucket", "Arn"]}], function
        granted_elsewhere = {
            a for s in by_sid.values() if s is not bucket for a in as_list(s["Action"])
        }
        assert "s3:ListBucket" not in granted_elsewhere, function
    for stage in STAGES:
        for role in set(ROLE_OF.values()):
            path = ROOT / ".chalice" / f"policy-{stage}-{role}.json"
            by_sid = {s["Sid"]: s for s in json.loads(path.read_text())["Statement"]}
            assert by_sid["Bucket"]["Resource"] == [
                f"arn:aws:s3:::spool-{stage}-payloads-{OWN}-{REGION}"
            ], (stage, role)


def test_policy_files_grant_what_the_template_grants(template: dict[str, Any]) -> None:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    for stage in STAGES:
        for function, role in ROLE_OF.items():
            path = ROOT / ".chalice" / f"policy-{stage}-{role}.json"
            from_file = {
                (s["Sid"], a)
                for s in json.loads(path.read_text())["Statement"]
                for a in as_list(s["Action"])
            }
            role_id = ROLE_IDS[function]
            document = template["Resources"][role_id]["Properties"]["Policies"][0]
            in_template = {
                (s["Sid"], a) for s in document["PolicyDocument"]["Statement"]
                for a in as_list(s["Action"])
            }  # fmt: skip
            assert from_file == in_template, (stage, role)
            text = path.read_text()
            assert f"table/spool-{stage}-jobs" in text and f"sqs:*:{OWN}:spool-{stage}-jobs" in text
        assert config["stages"][stage]["environment_variables"]["SPOOL_STORE_URL"].startswith(
            f"dynamodb://spool-{stage}-jobs?queue=spool-{stage}-jobs"
        )


OWN = "${aws:PrincipalAccount}"  # the IAM policy variable: the role's own account
REGION = "${aws:RequestedRegion}"  # and the region the call was made to (the bucket's)


def test_policy_files_name_this_accounts_resources_only() -> None:
    """A policy file cannot hold the account id, but must not match another account's
    bucket, table or queue: every ARN with an account field names the role's own, and
    the bucket (S3 ARNs have no account) is the data stack's name in this account."""
    for stage in STAGES:
        for role in set(ROLE_OF.values()):
            path = ROOT / ".chalice" / f"policy-{stage}-{role}.json"
            for statement in json.loads(path.read_text())["Statement"]:
                for arn in as_list(statement["Resource"]):
                    parts = arn.replace(OWN, "OWN").replace(REGION, "REGION").split(":")
                    if parts[2] == "s3":
                        # No wildcard in the bucket's name: `-*/spool/*` also matched
                        # any key with /spool/ in it (the * ran across the slash).
                        bucket = parts[5].split("/")[0]
                        assert bucket == f"spool-{stage}-payloads-OWN-REGION", arn
                        assert statement["Condition"] == {
                            "StringEquals": {"s3:ResourceAccount": OWN}
                        }
                    else:
                        assert parts[4] == "OWN", arn
                    named = f"spool-{stage}" in arn or f"parameter/spool/{stage}/" in arn
                    assert named or parts[2] == "kms", arn


def test_queues_are_encrypted_and_jobs_queue_redrives_to_its_dlq(template: dict[str, Any]) -> None:
    queues = resources(template, "AWS::SQS::Queue")
    assert set(queues) == {"JobsQueue", "JobsDeadLetterQueue"}
    for queue in queues.values():
        props = queue["Properties"]
        assert props.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in props
    redrive = queues["JobsQueue"]["Properties"]["RedrivePolicy"]
    assert refs(redrive["deadLetterTargetArn"]) == {"JobsDeadLetterQueue"}
    assert 1 <= redrive["maxReceiveCount"] <= 10


def test_a_poison_message_reaches_the_dlq_within_the_hour(template: dict[str, Any]) -> None:
    """Each delivery hides a message for the visibility V from when it is received, up
    to the batching window W before the invocation starts; one whose container hangs
    until the Lambda timeout T (the heartbeat extending it) for at most W + T + V."""
    queue = template["Resources"]["JobsQueue"]["Properties"]
    visibility = queue["VisibilityTimeout"]
    receives = queue["RedrivePolicy"]["maxReceiveCount"]
    timeout = template["Resources"]["RunJobs"]["Properties"]["Timeout"]
    [sqs] = [
        e["Properties"]
        for e in template["Resources"]["RunJobs"]["Properties"]["Events"].values()
        if e["Type"] == "SQS"
    ]
    window = sqs.get("MaximumBatchingWindowInSeconds", 0)
    assert visibility >= timeout  # never handed to a second worker while the first runs
    assert receives * (window + visibility) <= 3600
    assert receives * (window + timeout + visibility) <= 3600
    env = template["Resources"]["RunJobs"]["Properties"]["Environment"]["Variables"]
    assert int(env["SPOOL_SQS_VISIBILITY_TIMEOUT"]) == visibility  # the heartbeat's figure
    # `chalice deploy` gets the same figure from config.json as the data stack's queue.
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    for stage in STAGES:
        variables = config["stages"][stage]["environment_variables"]
        assert int(variables["SPOOL_SQS_VISIBILITY_TIMEOUT"]) == visibility
    data = json.loads((ROOT / "infra" / "data-stack.json").read_text())
    assert data["Resources"]["JobsQueue"]["Properties"]["VisibilityTimeout"] == visibility


def test_generate_refuses_a_worker_timeout_that_slows_the_dlq() -> None:
    assert generate.visibility_for(240) == 480
    with pytest.raises(SystemExit, match="lambda_timeout 900"):
        generate.visibility_for(900)  # what shipped: 5 x 90 min before the DLQ
    # The batching window counts too: each delivery can wait it out before it runs.
    with pytest.raises(SystemExit, match="at or under 290 s"):
        generate.visibility_for(295, window=30)


def test_sqs_event_source_reports_batch_item_failures(template: dict[str, Any]) -> None:
    events = template["Resources"]["RunJobs"]["Properties"]["Events"]
    sqs = [e for e in events.values() if e["Type"] == "SQS"]
    assert len(sqs) == 1
    props = sqs[0]["Properties"]
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert refs(props["Queue"]) == {"JobsQueue"}
    assert props["BatchSize"] <= 10
    # Light load gathers a few jobs per invocation (bench/aws_requests.py), for a
    # start at most this late; over 10 s would be felt, and needs a bigger budget.
    assert 1 <= props["MaximumBatchingWindowInSeconds"] <= 10


def test_bucket_is_encrypted_private_and_tls_only(template: dict[str, Any]) -> None:
    [bucket] = resources(template, "AWS::S3::Bucket").values()
    props = bucket["Properties"]
    rules = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rules[0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    block = props["PublicAccessBlockConfiguration"]
    assert all(block[k] is True for k in ("BlockPublicAcls", "BlockPublicPolicy",
                                          "IgnorePublicAcls", "RestrictPublicBuckets"))  # fmt: skip
    [policy] = resources(template, "AWS::S3::BucketPolicy").values()
    [deny] = policy["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_table_matches_the_code_and_has_ttl_and_pitr(template: dict[str, Any]) -> None:
    props = template["Resources"]["JobsTable"]["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    code = table_definition("x")
    for key in ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes"):
        assert props[key] == code[key]


def test_every_function_gets_the_store_url_of_these_resources(template: dict[str, Any]) -> None:
    for function in ROLE_OF:
        env = template["Resources"][function]["Properties"]["Environment"]["Variables"]
        url = env["SPOOL_STORE_URL"]
        assert refs(url) == {*DATA, "RetentionDays"}  # the parameter the bucket's rules follow
        assert url["Fn::Sub"].startswith("dynamodb://${JobsTable}?queue=${JobsQueue}")


def test_the_bucket_keeps_objects_as_long_as_the_store_keeps_their_jobs() -> None:
    """Was: the lifecycle rules were fixed (results 31 days, payloads 397) whatever the
    store URL's retention_days said, so with retention_days=90 a result in S3 answered
    result_missing from day 31 to day 90. Now one stack parameter feeds both, in both
    templates: a result outlives its record (finish + retention) by a day, a payload a
    record that waited the longest (366 days) before it ran, by a day."""
    from chalicelib.storage.dynamodb_aws import DynamoConfig

    for name in ("resources.json", "data-stack.json"):
        stack = json.loads((ROOT / "infra" / name).read_text())
        parameter = stack["Parameters"]["RetentionDays"]
        assert parameter["Default"] == DynamoConfig(table="t").retention_days, name
        url = stack["Outputs"]["StoreUrl"]["Value"]["Fn::Sub"]
        assert "&retention_days=${RetentionDays}" in url, name
        rules = {
            r["Id"]: r["ExpirationInDays"]
            for r in stack["Resources"]["PayloadBucket"]["Properties"]["LifecycleConfiguration"][
                "Rules"
            ]
            if "ExpirationInDays" in r
        }
        assert rules == {
            "results": {
                "Fn::FindInMap": ["RetentionRules", {"Ref": "RetentionDays"}, "ResultDays"]
            },
            "payloads": {
                "Fn::FindInMap": ["RetentionRules", {"Ref": "RetentionDays"}, "PayloadDays"]
            },
        }, name
        table = stack["Mappings"]["RetentionRules"]
        assert sorted(int(k) for k in table) == sorted(parameter["AllowedValues"]), name
        for days, kept in table.items():
            assert kept["ResultDays"] >= int(days) + 1, (name, days)
            assert kept["PayloadDays"] >= MAX_DELAY_SECONDS // 86400 + int(days) + 1, (name, days)


# -- the edges: runtime, throttling, logs, retention, concurrency, keys ---------------------


def test_every_function_runs_the_supported_runtime_and_architecture(
    template: dict[str, Any],
) -> None:
    """chalice package writes the local Python's runtime (python3.11 on Amazon Linux 2);
    infra/finalize.py sets infra/lambda_target.py's, the one the zip's wheels are for."""
    functions = resources(template, "AWS::Serverless::Function")
    assert "Function" not in template.get("Globals", {})
    for name, function in functions.items():
        assert function["Properties"]["Runtime"] == RUNTIME, name
        assert function["Properties"]["Architectures"] == [DEFAULT_ARCH], name


def test_finalize_sets_the_chosen_architecture_and_refuses_others(
    template: dict[str, Any],
) -> None:
    chalice_like = json.loads(json.dumps(template))
    for resource in resources(chalice_like, "AWS::Serverless::Function").values():
        resource["Properties"].update(Runtime="python3.11", Architectures=["x86_64"])
    for arch in ARCHITECTURES:
        done = finalize(json.loads(json.dumps(chalice_like)), "prod", arch)
        for function in resources(done, "AWS::Serverless::Function").values():
            assert function["Properties"]["Runtime"] == RUNTIME
            assert function["Properties"]["Architectures"] == [arch]
    with pytest.raises(ValueError, match="architecture"):
        finalize(chalice_like, "prod", "ppc64le")
    with pytest.raises(ValueError, match="no Lambda functions"):
        finalize({"Resources": {}}, "prod")


def test_api_stage_is_throttled_and_writes_an_access_log(template: dict[str, Any]) -> None:
    api = template["Resources"]["RestAPI"]
    props = api["Properties"]
    [everything] = props["MethodSettings"]
    assert (everything["ResourcePath"], everything["HttpMethod"]) == ("/*", "*")
    assert everything["ThrottlingRateLimit"] == {"Ref": "ApiThrottleRateLimit"}
    assert everything["ThrottlingBurstLimit"] == {"Ref": "ApiThrottleBurstLimit"}
    parameters = template["Parameters"]
    assert parameters["ApiThrottleRateLimit"]["Default"] > 0
    assert (
        parameters["ApiThrottleBurstLimit"]["Default"]
        >= parameters["ApiThrottleRateLimit"]["Default"]
    )
    assert everything["LoggingLevel"] == "OFF"  # execution logs: a group with no retention
    # SAM would otherwise also deploy a stage named "Stage", unthrottled and unlogged.
    assert "OpenApiVersion" in props
    access = props["AccessLogSetting"]
    assert {r for r in refs(access["DestinationArn"]) if not r.startswith("AWS::")} == {
        "ApiAccessLogGroup"
    }
    assert not access["DestinationArn"]["Fn::Sub"].endswith(":*")  # API Gateway refuses it
    fields = json.loads(access["Format"])
    assert {"requestId", "status", "ip"} <= set(fields)
    # API Gateway logs only with the region's logging role set; kept if the stack goes.
    assert "ApiGatewayAccount" in api["DependsOn"]
    account = template["Resources"]["ApiGatewayAccount"]
    assert refs(account["Properties"]["CloudWatchRoleArn"]) == {"ApiGatewayLogsRole"}
    for name in ("ApiGatewayAccount", "ApiGatewayLogsRole"):
        assert template["Resources"][name]["DeletionPolicy"] == "Retain"


def test_every_log_group_has_a_retention_and_every_function_logs_to_one(
    template: dict[str, Any],
) -> None:
    groups = resources(template, "AWS::Logs::LogGroup")
    assert set(groups) == {*LOG_GROUPS.values(), "ApiAccessLogGroup"}
    for name, group in groups.items():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name
    retention = template["Parameters"]["LogRetentionDays"]
    assert retention["Default"] in retention["AllowedValues"]
    for function, group_name in LOG_GROUPS.items():
        logging_config = template["Resources"][function]["Properties"]["LoggingConfig"]
        assert logging_config["LogGroup"] == {"Ref": group_name}
    data = json.loads((ROOT / "infra" / "data-stack.json").read_text())
    data_groups = resources(data, "AWS::Logs::LogGroup")
    names = {g["Properties"]["LogGroupName"]["Fn::Sub"] for g in data_groups.values()}
    # chalice deploy's function names: the policy files grant no logs:CreateLogGroup.
    assert names == {f"/aws/lambda/spool-${{Stage}}{s}" for s in ("", "-run_jobs", "-drain_due")}
    for group in data_groups.values():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_queues_are_kept_when_the_stack_is_deleted(template: dict[str, Any]) -> None:
    data = json.loads((ROOT / "infra" / "data-stack.json").read_text())
    for document in (template, data):
        kept = ("AWS::SQS::Queue", "AWS::DynamoDB::Table", "AWS::S3::Bucket")
        for type_ in kept:
            for name, resource in resources(document, type_).items():
                assert resource["DeletionPolicy"] == "Retain", name
                assert resource["UpdateReplacePolicy"] == "Retain", name


def test_worker_concurrency_is_capped(template: dict[str, Any]) -> None:
    """A cap on workers at once, so they cannot exhaust a database's connections or an
    SMTP relay: reserved, and the poller's MaximumConcurrency, so it never throttles."""
    worker = template["Resources"]["RunJobs"]["Properties"]
    reserved = worker["ReservedConcurrentExecutions"]["Fn::If"]
    assert reserved[0] == "ReservesWorkerConcurrency"
    assert reserved[1] == {"Ref": "WorkerConcurrency"}
    [sqs] = [e for e in worker["Events"].values() if e["Type"] == "SQS"]
    assert sqs["Properties"]["ScalingConfig"] == {
        "MaximumConcurrency": {"Ref": "WorkerConcurrency"}
    }
    cap = template["Parameters"]["WorkerConcurrency"]
    assert cap["MinValue"] == 2 and cap["Default"] >= cap["MinValue"]  # SQS's minimum
    assert template["Parameters"]["ReserveWorkerConcurrency"]["Default"] == "true"
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    for stage in STAGES:  # chalice deploy caps it too
        run_jobs = config["stages"][stage]["lambda_functions"]["run_jobs"]
        assert run_jobs["reserved_concurrency"] == cap["Default"]


def test_api_keys_come_from_the_stages_ssm_parameter(
    packaged: Path, template: dict[str, Any]
) -> None:
    stage = packaged.parent.name.split("-")[1].rstrip("0123456789")
    name = generate.api_keys_parameter(stage)
    assert template["Parameters"]["ApiKeysParameter"]["Default"] == name
    api_env = template["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]
    assert api_env["SPOOL_API_KEYS_PARAMETER"] == {"Ref": "ApiKeysParameter"}
    for function in ROLE_OF:  # no stage ships an empty key list again
        env = template["Resources"][function]["Properties"]["Environment"]["Variables"]
        assert "SPOOL_API_KEYS" not in env, function
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    assert "SPOOL_API_KEYS" not in config.get("environment_variables", {})
    for each in STAGES:
        assert "SPOOL_API_KEYS" not in config["stages"][each]["environment_variables"]
        api = config["stages"][each]["lambda_functions"]["api_handler"]
        assert api["environment_variables"]["SPOOL_API_KEYS_PARAMETER"] == (
            generate.api_keys_parameter(each)
        )
        policy = json.loads((ROOT / ".chalice" / f"policy-{each}-api.json").read_text())
        [keys] = [s for s in policy["Statement"] if s["Sid"] == "ApiKeys"]
        assert keys["Resource"] == [
            f"arn:aws:ssm:*:{OWN}:parameter{generate.api_keys_parameter(each)}"
        ]


def test_every_get_resource_hands_head_to_the_function(template: dict[str, Any]) -> None:
    """HEAD /health was API Gateway's own 404 (no HEAD method on the resource) where
    `spool serve` answers 200: every GET resource now has a HEAD method integrated with
    the API function, which answers it as GET without the body (app.py)."""
    paths = template["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]["paths"]
    gets = {path for path, ops in paths.items() if "get" in ops}
    assert "/health" in gets
    for path in gets:
        head, get = paths[path].get("head"), paths[path]["get"]
        assert head is not None, path
        integration = head["x-amazon-apigateway-integration"]
        assert integration == get["x-amazon-apigateway-integration"], path


def test_the_gateways_own_refusals_answer_in_the_apps_error_shape(
    template: dict[str, Any],
) -> None:
    """API Gateway answers some requests before any Lambda runs (no route, its stage
    throttle, a body past its limit, a timeout): those too carry the app's error
    shape and headers, and a path no route matches is a 404, as `spool serve` says."""
    from chalicelib.api.http import API_HEADERS
    from local.server import _no_route

    body = template["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    responses = body["x-amazon-apigateway-gateway-responses"]
    assert {"DEFAULT_4XX", "DEFAULT_5XX", "MISSING_AUTHENTICATION_TOKEN", "THROTTLED"} <= set(
        responses
    )
    sources = "\n".join(p.read_text() for p in (ROOT / "chalicelib").rglob("*.py"))
    # A gateway message may hold quotes and backslashes: messageString arrives quoted.
    message = 'the "gateway" said \\ no'
    for kind, response in responses.items():
        rendered = (
            response["responseTemplates"]["application/json"]
            .replace("$context.error.messageString", json.dumps(message))
            .replace("$context.httpMethod", "PATCH")
        )
        error = json.loads(rendered)["error"]
        assert set(error) == {"code", "message", "details"}, kind
        assert f'"{error["code"]}"' in sources, f"{kind}: a code the app never answers"
        assert isinstance(error["message"], str) and error["message"], kind
        headers = {
            k.removeprefix("gatewayresponse.header."): v.strip("'")
            for k, v in response["responseParameters"].items()
        }
        assert API_HEADERS.items() <= headers.items(), kind
        if "statusCode" in response:
            assert 400 <= int(response["statusCode"]) <= 599, kind
    missing = responses["MISSING_AUTHENTICATION_TOKEN"]
    _, served = _no_route("PATCH", "/nowhere")
    assert missing["statusCode"] == "404"
    rendered = missing["responseTemplates"]["application/json"].replace(
        "$context.httpMethod", "PATCH"
    )
    assert json.loads(rendered)["error"]["code"] == json.loads(served)["error"]["code"]
    assert "PATCH" in json.loads(rendered)["error"]["message"]
    for denied in ("ACCESS_DENIED", "WAF_FILTERED"):  # refused, not malformed
        assert responses[denied]["statusCode"] == "403"
        assert '"code": "forbidden"' in responses[denied]["responseTemplates"]["application/json"]
    throttled = responses["THROTTLED"]
    assert throttled["statusCode"] == "429"
    assert int(throttled["responseParameters"]["gatewayresponse.header.Retry-After"].strip("'")) > 0


# -- alarms: the dead letters and the functions' errors reach someone ---------------------


def _alarm_documents() -> dict[str, dict[str, Any]]:
    """Both templates: the merge template `make package` adds to chalice's, and the
    data stack `chalice deploy` needs (its functions' names fixed by stage)."""
    return {
        name: json.loads((ROOT / "infra" / name).read_text())
        for name in ("resources.json", "data-stack.json")
    }


def _alarms(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v["Properties"] for k, v in resources(document, "AWS::CloudWatch::Alarm").items()}


def _fires_on_one(alarm: dict[str, Any]) -> bool:
    """Whether the alarm fires on the first one (a message, a dead job, an error)."""
    operator, threshold = alarm["ComparisonOperator"], alarm["Threshold"]
    return (operator, threshold) in {
        ("GreaterThanThreshold", 0),
        ("GreaterThanOrEqualToThreshold", 1),
    }


@pytest.mark.parametrize("name", ["resources.json", "data-stack.json"])
def test_a_message_in_the_dead_letter_queue_raises_an_alarm(name: str) -> None:
    document = _alarm_documents()[name]
    watching = [
        alarm
        for alarm in _alarms(document).values()
        if alarm.get("Namespace") == "AWS/SQS"
        and alarm.get("MetricName") == "ApproximateNumberOfMessagesVisible"
        and any("JobsDeadLetterQueue" in refs(d["Value"]) for d in alarm["Dimensions"])
    ]
    assert len(watching) == 1, _alarms(document)
    [alarm] = watching
    assert _fires_on_one(alarm) and alarm["TreatMissingData"] == "notBreaching"


@pytest.mark.parametrize("name", ["resources.json", "data-stack.json"])
def test_a_job_buried_in_the_table_raises_an_alarm(name: str) -> None:
    """The dead-letter store on AWS is the table (a job's state `dead`): no AWS metric
    counts it, so the workers' `dead` log lines (a worker's, or the store's for a job
    its reap buried) are counted by a metric filter on each function that buries jobs,
    and an alarm watches that count."""
    document = _alarm_documents()[name]
    filters = resources(document, "AWS::Logs::MetricFilter")
    groups = {g for f in filters.values() for g in refs(f["Properties"]["LogGroupName"])}
    assert groups == {"RunJobsLogGroup", "DrainDueLogGroup"}
    metrics = set()
    for spec in filters.values():
        props = spec["Properties"]
        assert props["FilterPattern"] == '{ $.event = "dead" }'
        [transform] = props["MetricTransformations"]
        assert transform["MetricValue"] == "1"
        metrics.add((json.dumps(transform["MetricNamespace"]), transform["MetricName"]))
    assert len(metrics) == 1  # both functions' deaths in one metric
    [(namespace, metric)] = metrics
    watching = [
        a
        for a in _alarms(document).values()
        if json.dumps(a.get("Namespace")) == namespace and a.get("MetricName") == metric
    ]
    assert len(watching) == 1
    [alarm] = watching
    assert alarm["Statistic"] == "Sum" and _fires_on_one(alarm)
    assert alarm["TreatMissingData"] == "notBreaching"


def test_the_dead_filter_matches_the_line_lambda_writes() -> None:
    """The pattern `{ $.event = "dead" }` reads the JSON line's top-level `event`: the
    format Lambda logs in (SPOOL_LOG_FORMAT's default there), for a job a worker buried
    and one a reap buried alike."""
    import io

    from chalicelib import logs
    from chalicelib.config import Settings
    from chalicelib.storage.base import log_buried_by_reap

    assert logs.format_of(Settings(), {"AWS_LAMBDA_FUNCTION_NAME": "spool-dev"}) == "json"
    stream = io.StringIO()
    logs.configure(Settings(extra={"SPOOL_LOG_FORMAT": "json"}), stream=stream, force=True)
    try:
        log_buried_by_reap("j_1", "t", "echo", "default", 3, 3)
    finally:
        logs.reset()
    [line] = stream.getvalue().splitlines()
    assert json.loads(line)["event"] == "dead"


@pytest.mark.parametrize("name", ["resources.json", "data-stack.json"])
def test_each_function_s_errors_raise_an_alarm(name: str) -> None:
    document = _alarm_documents()[name]
    lambda_alarms = [a for a in _alarms(document).values() if a.get("Namespace") == "AWS/Lambda"]
    watched: list[Any] = []
    for alarm in lambda_alarms:
        assert alarm["MetricName"] == "Errors" and alarm["Statistic"] == "Sum"
        assert _fires_on_one(alarm) and alarm["TreatMissingData"] == "notBreaching"
        [dimension] = alarm["Dimensions"]
        assert dimension["Name"] == "FunctionName"
        watched.append(dimension["Value"])
    if name == "resources.json":
        assert sorted(refs(watched)) == sorted(ROLE_OF)  # the SAM functions, by Ref
    else:
        subs = sorted(v["Fn::Sub"] for v in watched)
        assert subs == sorted(
            generate.chalice_function_name("${Stage}", f) for f in generate.FUNCTIONS
        )


@pytest.mark.parametrize("name", ["resources.json", "data-stack.json"])
def test_every_alarm_notifies_the_topic_given_and_no_role_gains_anything(name: str) -> None:
    """An alarm nobody hears is no alarm: the stack takes an SNS topic's ARN
    (AlarmTopicArn; empty, the default, leaves the alarms in the console only). The
    alarms need no permission of the functions' roles: those stay as they were."""
    document = _alarm_documents()[name]
    parameter = document["Parameters"]["AlarmTopicArn"]
    assert parameter["Type"] == "String" and parameter["Default"] == ""
    assert document["Conditions"]["HasAlarmTopic"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]
    }
    alarms = _alarms(document)
    assert len(alarms) == 5  # the DLQ, the dead jobs, each of the three functions' errors
    for alarm in alarms.values():
        assert alarm["AlarmActions"] == [
            {"Fn::If": ["HasAlarmTopic", {"Ref": "AlarmTopicArn"}, {"Ref": "AWS::NoValue"}]}
        ]
    actions = {a for _, s in statements(document) for a in as_list(s["Action"])}
    assert not {a for a in actions if a.startswith(("cloudwatch:", "sns:"))}
