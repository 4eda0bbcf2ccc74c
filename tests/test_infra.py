"""The AWS template: `make package` builds it, linters accept it, and it keeps its promises.

Nothing here talks to AWS: every subprocess gets an AWS endpoint on a closed
local port besides the guard variables, and the linters also get HTTP proxies
on a closed port, so a tool that tried to reach out would fail here instead.
`chalice package` is the one exception to the proxies: it fetches the Lambda
(manylinux) wheels of requirements.txt from the package registry, as pip does
when `make test` installs the project.
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
from tests.procs import guarded_env

ROOT = Path(__file__).resolve().parent.parent
SAM = ROOT / ".tools" / "sam-venv" / "bin" / "sam"
CFN_LINT = Path(sys.executable).parent / "cfn-lint"
STAGES = ("dev", "prod")
ROLE_OF = {"APIHandler": "api", "RunJobs": "worker", "DrainDue": "scheduler"}
ROLE_IDS = {"APIHandler": "ApiHandlerRole", "RunJobs": "RunJobsRole", "DrainDue": "DrainDueRole"}
DATA = ("JobsTable", "JobsQueue", "PayloadBucket")


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
        ["make", "-s", "-o", ".venv/.installed", "package", f"STAGE={request.param}",
         f"PACKAGE_DIR={out}"],
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
    assert (packaged.parent / "deployment.zip").stat().st_size < 10 * 1024 * 1024


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


def test_each_function_has_its_own_role_scoped_to_the_data(template: dict[str, Any]) -> None:
    functions = resources(template, "AWS::Serverless::Function")
    assert set(functions) == set(ROLE_OF)
    roles = {refs(f["Properties"]["Role"]).pop() for f in functions.values()}
    assert roles == set(ROLE_IDS.values())  # one role per function
    for function, role_id in ROLE_IDS.items():
        policy = template["Resources"][role_id]["Properties"]["Policies"]
        for statement in policy[0]["PolicyDocument"]["Statement"]:
            targets = refs(statement["Resource"])
            if statement["Sid"] == "Logs":
                assert all("log-group:/aws/lambda/${AWS::StackName}-" in json.dumps(r)
                           for r in statement["Resource"])  # fmt: skip
            else:
                assert len(targets) == 1 and targets <= set(DATA), (function, statement)


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
            assert f"table/spool-{stage}-jobs" in text and f"sqs:*:*:spool-{stage}-jobs" in text
        assert config["stages"][stage]["environment_variables"]["SPOOL_STORE_URL"].startswith(
            f"dynamodb://spool-{stage}-jobs?queue=spool-{stage}-jobs"
        )


def test_queues_are_encrypted_and_jobs_queue_redrives_to_its_dlq(template: dict[str, Any]) -> None:
    queues = resources(template, "AWS::SQS::Queue")
    assert set(queues) == {"JobsQueue", "JobsDeadLetterQueue"}
    for queue in queues.values():
        props = queue["Properties"]
        assert props.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in props
    redrive = queues["JobsQueue"]["Properties"]["RedrivePolicy"]
    assert refs(redrive["deadLetterTargetArn"]) == {"JobsDeadLetterQueue"}
    assert 1 <= redrive["maxReceiveCount"] <= 10


def test_visibility_is_at_least_six_times_the_worker_timeout(template: dict[str, Any]) -> None:
    visibility = template["Resources"]["JobsQueue"]["Properties"]["VisibilityTimeout"]
    timeout = template["Resources"]["RunJobs"]["Properties"]["Timeout"]
    assert visibility >= 6 * timeout
    env = template["Resources"]["RunJobs"]["Properties"]["Environment"]["Variables"]
    assert int(env["SPOOL_SQS_VISIBILITY_TIMEOUT"]) == visibility  # the heartbeat's figure


def test_sqs_event_source_reports_batch_item_failures(template: dict[str, Any]) -> None:
    events = template["Resources"]["RunJobs"]["Properties"]["Events"]
    sqs = [e for e in events.values() if e["Type"] == "SQS"]
    assert len(sqs) == 1
    props = sqs[0]["Properties"]
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert refs(props["Queue"]) == {"JobsQueue"}
    assert props["BatchSize"] <= 10


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
        assert refs(url) == set(DATA)
        assert url["Fn::Sub"].startswith("dynamodb://${JobsTable}?queue=${JobsQueue}")
