"""Refuse handlers whose timeout the worker function could never give them.

An SQS worker starts a job only while the job's own timeout (plus
DRAIN_MARGIN) still fits before the Lambda deadline, so a handler whose
timeout is as long as the worker function's never starts: every message of
that type is handed back until SQS moves it to the dead-letter queue, while
the job itself waits forever. That is a deployment mistake, refused twice:

- at start-up, when SPOOL_WORKER_TIMEOUT is set (the template sets it to the
  run_jobs function's timeout): `build_runtime` raises ConfigError for the
  SPOOL_HANDLERS modules (the built-ins are imported later, on first use);
- by `make package`, before anything is built:
  `python -m chalicelib.handler_check --stage dev` reads .chalice/config.json
  (the stage's environment and run_jobs' lambda_timeout) and loads the same
  handlers a deployed function would. It checks the stage's SPOOL_* names too
  (check_names), since Lambda never does, and refuses a secret written there in
  plain text (check_secrets), which `chalice package` would copy into the template.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from chalicelib.config import ConfigError, Settings
from chalicelib.handlers import HandlerSpec, Registry

WORKER_TIMEOUT = "SPOOL_WORKER_TIMEOUT"
VISIBILITY = "SPOOL_SQS_VISIBILITY_TIMEOUT"
LAMBDA_MAX_TIMEOUT = 900.0
# What Chalice gives a function without lambda_timeout.
CHALICE_DEFAULT_TIMEOUT = 60.0
WORKER_FUNCTION = "run_jobs"
# A handler needs its timeout plus DRAIN_MARGIN (1 s, chalicelib.worker; not imported,
# so this stays light) left before the deadline to start, judged when the job is
# about to be claimed: after the invocation began, the runtime's first imports and
# the batch's reads. With only that 1 s here, timeout=239 passed under a 240 s worker
# yet never ran (every fresh invocation had just under 240 s left). So the check keeps
# room for that start too.
START_ALLOWANCE = 9.0
MARGIN = 1.0 + START_ALLOWANCE


def never_started(specs: Sequence[HandlerSpec], worker_timeout: float) -> list[HandlerSpec]:
    """The handlers a worker of this timeout could never start (too_long's, as specs)."""
    return [spec for spec in specs if spec.timeout + MARGIN > worker_timeout]


def too_long(specs: Sequence[HandlerSpec], worker_timeout: float) -> list[str]:
    """One message per handler that could never start in a worker of this timeout."""
    return [
        f"handler {spec.type!r} has timeout={spec.timeout:g}s, but the worker function's "
        f"timeout is {worker_timeout:g}s: a job needs its timeout plus {MARGIN:g}s left to "
        f"start, so {spec.type!r} jobs would never run. Lower the handler's timeout to at "
        f"most {worker_timeout - MARGIN:g}s or raise run_jobs' lambda_timeout (Lambda allows "
        "up to 900s)"
        for spec in specs
        if spec.timeout + MARGIN > worker_timeout
    ]


def worker_timeout(settings: Settings) -> float | None:
    """SPOOL_WORKER_TIMEOUT in seconds, or None where no worker function bounds jobs.
    At most Lambda's own maximum: a larger value would let through handlers no
    function could ever start."""
    try:
        value = settings.number(WORKER_TIMEOUT, 0.0, minimum=0.0, maximum=LAMBDA_MAX_TIMEOUT)
    except ValueError as exc:
        raise ConfigError(f"{exc} (Lambda's longest function timeout)") from None
    return value or None


def check_visibility(settings: Settings, limit: float) -> None:
    """The jobs queue must hide a message at least as long as run_jobs may run: a
    message that reappears while its invocation still runs is delivered again (AWS
    refuses such an SQS trigger when it is created; a setting changed later is not)."""
    if not settings.text(VISIBILITY):
        return  # not an SQS deployment: the default visibility is not the queue's
    try:
        visibility = settings.checked(VISIBILITY, 30)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if visibility < limit:
        raise ConfigError(
            f"{VISIBILITY}={visibility:g} is shorter than {WORKER_TIMEOUT}={limit:g}: a "
            "message would reappear, and its job be delivered again, while the invocation "
            f"running it may still run. Give the queue a visibility timeout of at least "
            f"{limit:g}s (infra/ makes it twice the function's)"
        )


def check(registry: Registry, settings: Settings, everything: bool = False) -> None:
    """Raise ConfigError naming every handler longer than SPOOL_WORKER_TIMEOUT allows.

    At start-up (everything=False) the handlers imported so far are checked: the
    SPOOL_HANDLERS modules, which the environment can change without a new
    package. The built-in modules are imported on first use (Registry.defer) and
    their timeouts are fixed in the package, so `make package` (everything=True)
    checks them with the rest.
    """
    limit = worker_timeout(settings)
    if limit is None:
        return
    check_visibility(settings, limit)
    specs = registry.specs() if everything else registry.loaded_specs()
    problems = too_long(specs, limit)
    if problems:
        raise ConfigError(f"{WORKER_TIMEOUT}={limit:g}: " + "; ".join(problems))


def stage_config(config: Mapping[str, Any], stage: str) -> tuple[dict[str, str], float]:
    """A stage's environment and run_jobs' timeout, as Chalice would deploy them."""
    stages = config.get("stages", {})
    if stage not in stages:
        raise ConfigError(f"no stage {stage!r} in .chalice/config.json ({', '.join(stages)})")
    staged = stages[stage]
    env = {**config.get("environment_variables", {}), **staged.get("environment_variables", {})}
    function = {
        **config.get("lambda_functions", {}).get(WORKER_FUNCTION, {}),
        **staged.get("lambda_functions", {}).get(WORKER_FUNCTION, {}),
    }
    timeout = function.get(
        "lambda_timeout",
        staged.get("lambda_timeout", config.get("lambda_timeout", CHALICE_DEFAULT_TIMEOUT)),
    )
    return {k: str(v) for k, v in env.items()}, float(timeout)


def deployed_variables(config: Mapping[str, Any], stage: str) -> dict[str, str]:
    """Every environment variable the stage gives any of its functions: the app's and
    the stage's, and each function's own (`lambda_functions.NAME.environment_variables`
    at either level), a function's value winning."""
    staged = config.get("stages", {}).get(stage, {})
    env = {**config.get("environment_variables", {}), **staged.get("environment_variables", {})}
    for level in (config, staged):
        for function in level.get("lambda_functions", {}).values():
            env.update(function.get("environment_variables", {}))
    return {k: str(v) for k, v in env.items()}


def check_names(env: Mapping[str, str]) -> None:
    """Refuse a misspelt setting among the deployed variables (ConfigError), as `spool`
    and `chalice local` refuse one, and print a warning naming any other SPOOL_* name
    no setting has: Lambda never checks names (a cold start does not pay for it), so
    SPOOL_STORE_URL without its L, or SPOOL_HANDLERS written with _MODULES for its S,
    in .chalice/config.json was packaged and deployed, and every function ran on the
    default store or without the handlers."""
    from chalicelib.settings_catalog import misspelt_refusal, warn_unread

    refusal = misspelt_refusal(env)
    if refusal is not None:
        problem, fix = refusal
        raise ConfigError(f"{problem}. {fix}")
    warn_unread(env)


# Secret settings that have a form safe to deploy, and that form. `chalice package`
# copies the stage's variables as they are into every function's Environment in
# out/sam.json (the artifact uploaded to S3, and the functions' configuration anyone
# allowed lambda:GetFunctionConfiguration reads); the plain setting also wins over the
# SSM parameter the stack reads, so the SecureString was bypassed without a word.
SAFE_FORMS = {
    "SPOOL_API_KEYS": "keep the keys in the SSM SecureString the stack's ApiKeysParameter "
    "names (SPOOL_API_KEYS_PARAMETER), or list only sha256:<hex digest>=tenant entries",
    "SPOOL_METRICS_KEYS": "list only sha256:<hex digest> entries (chalicelib/api/auth.py)",
    "SPOOL_SMTP_PASSWORD": "put it in an SSM SecureString and deploy with "
    "SmtpPasswordParameter (SPOOL_SMTP_PASSWORD_PARAMETER)",
    "SPOOL_WEBHOOKS": "put the JSON in an SSM SecureString and deploy with "
    "WebhooksParameter (SPOOL_WEBHOOKS_PARAMETER)",
}


def check_secrets(env: Mapping[str, str]) -> None:
    """Refuse (ConfigError) a secret the deployed variables hold in plain text where a
    safe form exists (SAFE_FORMS), and print a warning naming any other secret they
    hold (a URL's password, a SPOOL_*_TOKEN): those have no parameter to move to.
    Names only: a value never reaches the message."""
    from chalicelib.log_redact import (
        NAMES_OF_SECRETS,
        key_entries,
        secrets_in,
        webhook_secrets,
    )

    plain = {
        "SPOOL_API_KEYS": key_entries(env.get("SPOOL_API_KEYS", "")),
        "SPOOL_METRICS_KEYS": key_entries(env.get("SPOOL_METRICS_KEYS", "")),
        "SPOOL_SMTP_PASSWORD": {env.get("SPOOL_SMTP_PASSWORD", "").strip()} - {""},
        "SPOOL_WEBHOOKS": webhook_secrets(env.get("SPOOL_WEBHOOKS", "")),
    }
    refused = [f"{name} holds a secret in plain text: {SAFE_FORMS[name]}"
               for name, found in plain.items() if found]  # fmt: skip
    if refused:
        raise ConfigError(
            "; ".join(refused) + ". `chalice package` copies the stage's variables into "
            "the template and the functions' configuration as they are (docs/aws.md)"
        )
    # Each variable judged alone, so a short secret found inside another value never
    # names that one; SPOOL_SECRET_VARIABLES names the handlers' own secrets.
    listed = set(Settings.from_env(env).items(NAMES_OF_SECRETS))
    names = sorted(
        name
        for name, value in env.items()
        if value.strip()
        and name != NAMES_OF_SECRETS
        and (name in listed or secrets_in(Settings.from_env({name: value})))
    )
    if names:
        verb = "holds" if len(names) == 1 else "hold"
        print(
            f"handler_check: warning: {', '.join(names)} {verb} a secret in plain text, which "
            "`chalice package` copies into the template and the functions' configuration",
            file=sys.stderr,
            flush=True,
        )


def main(argv: Sequence[str] | None = None) -> int:
    from chalicelib.handlers import registry
    from chalicelib.runtime import load_handlers, offered

    parser = argparse.ArgumentParser(description="Check handler timeouts against run_jobs'.")
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--config", type=Path, default=Path(".chalice/config.json"))
    args = parser.parse_args(argv)
    try:
        config = json.loads(args.config.read_text())
        env, timeout = stage_config(config, args.stage)
        deployed = deployed_variables(config, args.stage)
        check_names(deployed)
        check_secrets(deployed)
        declared = worker_timeout(Settings.from_env(env))
        if declared is not None and declared != timeout:
            raise ConfigError(
                f"{WORKER_TIMEOUT}={declared:g} in the {args.stage} environment differs from "
                f"{WORKER_FUNCTION}'s lambda_timeout {timeout:g}: they must be equal"
            )
        settings = Settings.from_env({**env, WORKER_TIMEOUT: f"{timeout:g}"})
        load_handlers(registry, settings)
        check(offered(settings), settings, everything=True)
    except ConfigError as exc:
        print(f"handler_check ({args.stage}): {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
