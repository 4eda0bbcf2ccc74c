"""The `spool` command line's one error boundary.

Whatever goes wrong, a person sees one line on stderr, `spool: <problem>. <fix>`,
and a non-zero exit: 2 when what they typed or configured is wrong (usage,
settings, a job the handlers refuse), 1 when something failed at run time (the
store is down, the job is not there), 130 on Ctrl-C. Anything unexpected is one
line too, with the way to see the traceback (SPOOL_DEBUG=1). Every line goes
through redact_text, so a store password in an exception never reaches the
terminal or a CI log.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from chalicelib.config import ConfigError, parse_flag
from chalicelib.errors import (
    UNKNOWN_TYPE_FIX_START,
    BadRequest,
    InvalidTransition,
    JobNotFound,
    PayloadTooLarge,
    SpoolError,
    StoreNotMigrated,
    StoreUnavailable,
    UnknownJobType,
    ValidationFailed,
)
from chalicelib.jsonstrict import is_utf8
from chalicelib.redact import redact_text
from local.tables import printable

if TYPE_CHECKING:
    from pydantic import ValidationError

EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
DEBUG_VARIABLE = "SPOOL_DEBUG"
NOT_UTF8 = "an argument holds bytes that are not UTF-8 text"
NOT_UTF8_FIX = "Retype it, or check the terminal's encoding (LANG, LC_ALL)"


class CliFailure(Exception):
    """A failure the command names itself: the problem, the fix, the exit code."""

    def __init__(self, problem: str, fix: str = "", code: int = EXIT_RUNTIME) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix
        self.code = code


class UsageError(CliFailure):
    """What was typed cannot work (exit 2)."""

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem, fix, EXIT_USAGE)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one `spool:` line naming the fix (exit 2).

    An option argparse does not know is named as such wherever it stands (before
    the command, between a command and its subcommand, after either), with the one
    meant when it is a letter or two off, and the help that lists it: this parser's
    own, or that of the (sub)command the option belongs to when it was typed before
    that command's name."""

    _argv: list[str] = []

    def error(self, message: str) -> NoReturn:
        unknown = self._unknown_option(message)
        if unknown is not None:  # argparse took the option's value for a command
            message = "unrecognized arguments: " + " ".join(unknown)
        elif (stray := self._hidden_choice(message)) is not None:
            message = "unrecognized arguments: " + stray
        elif message.startswith("the following arguments are required"):
            # `spool --urll` was told only that a command is missing: the typo first.
            strays = [w for w in self._argv if self._unknown(w)]
            if strays:
                message = "unrecognized arguments: " + " ".join(strays)
        meant, fix = self._meant(message)
        worded = self._command_words(message, meant)
        report(UsageError(worded or message + meant, fix))
        raise SystemExit(EXIT_USAGE)

    def _command_words(self, message: str, meant: str) -> str | None:
        """argparse's refusal of this parser's command slot, in words: `spool enqeue`
        was "argument {worker,enqueue,...}: invalid choice: 'enqeue' (choose from
        'worker', ...)", `spool` alone "the following arguments are required:
        {worker,enqueue,...}". None for any other message."""
        import re

        action = next((a for a in self._actions if isinstance(a, argparse._SubParsersAction)), None)
        if action is None:
            return None
        slot = argparse._get_action_name(action)
        names = ", ".join(action.choices)
        if message == f"the following arguments are required: {slot}":
            return f"`{self.prog}` needs a command: {names}"
        typed = re.fullmatch(
            rf"argument {re.escape(str(slot))}: invalid choice: '(.*)' \(.*", message
        )
        if typed is None:
            return None
        said = f"{typed.group(1)!r} is not a command of `{self.prog}`"
        return said + meant if meant else f"{said} (its commands: {names})"

    def _unknown_option(self, message: str) -> list[str] | None:
        """[option, value] when `message` refuses a value as a choice (a command's
        name) that argparse read only because the option before it is unknown:
        `spool --urll URL jobs` was "invalid choice: 'URL'", about the URL."""
        import re

        choice = re.search(r"invalid choice: '(.*)' \(choose from", message)
        if choice is None or choice.group(1) not in self._argv:
            return None
        at = self._argv.index(choice.group(1))
        if at == 0:
            return None
        before = self._argv[at - 1]
        if "=" in before or not self._unknown(before):  # `=`: it had its own value
            return None
        return [before, choice.group(1)]

    def _hidden_choice(self, message: str) -> str | None:
        """The word refused as a choice of an argument --help does not show (`spool
        jobs`'s optional `list`): a stray word, not a wrong value of something the
        user can look up. `spool jobs --json x` said "argument action: invalid
        choice: 'x' (choose from 'list')"."""
        import re

        choice = re.match(r"argument (\S+): invalid choice: '(.*)' \(choose from", message)
        if choice is None:
            return None
        hidden = any(
            a.dest == choice.group(1) and a.help == argparse.SUPPRESS for a in self._actions
        )
        return choice.group(2) if hidden else None

    def _unknown(self, word: str) -> bool:
        """Whether `word` is an option this parser knows neither whole nor as the
        unique abbreviation argparse takes (`--ur` for `--url`)."""
        name = word.split("=", 1)[0]
        if not name.startswith("-") or name == "-" or name == "--":
            return False
        if name in self._option_string_actions:
            return False
        return not (
            name.startswith("--") and any(o.startswith(name) for o in self._option_string_actions)
        )

    def _meant(self, message: str) -> tuple[str, str]:
        """(`: did you mean X?` or "", the fix): for a command, choice or option a
        letter or two off, the one meant, as a misspelt setting's name is told it;
        for an option of a (sub)command typed before that command's name, the help
        that lists it (argparse hands such an option to the parser before it)."""
        import difflib
        import re

        fix = f"See `{self.prog} --help`"
        choice = re.search(r"invalid choice: '(.*)' \(choose from (.*)\)$", message)
        if choice:
            options = re.findall(r"'([^']*)'", choice.group(2))
            close = difflib.get_close_matches(choice.group(1), options, n=1, cutoff=0.75)
            return (f": did you mean {close[0]!r}?" if close else ""), fix
        if not message.startswith("unrecognized arguments: "):
            return "", fix

        def closest(name: str, parser: argparse.ArgumentParser) -> str | None:
            known = [o for a in parser._actions for o in a.option_strings if o != "-h"]
            if name in known:
                return name
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
            return close[0] if close else None

        for word in message.removeprefix("unrecognized arguments: ").split():
            name = word.split("=", 1)[0]
            if not name.startswith("-") or name == "--":
                continue
            named = self._commands_named()
            for parser in (self, *named):
                option = closest(name, parser)
                if option is None:
                    continue
                meant = "" if option == name else f": did you mean {option}?"
                if parser is not self:
                    fix = f"Give it after `{parser.prog}`: see `{parser.prog} --help`"
                return meant, fix
            # No subcommand typed yet (`spool dlq --urll URL`): look in each of them.
            subs = self._subcommands() if not named else {}
            found = {sub: closest(name, parser) for sub, parser in subs.items()}
            having = [sub for sub, option in found.items() if option is not None]
            if having:
                option = found[having[0]]
                meant = "" if option == name else f": did you mean {option}?"
                fix = (
                    f"Give it after the subcommand ({', '.join(having)}): {fix[0].lower()}{fix[1:]}"
                )
                return meant, fix
            return self._server_option(name), fix
        return "", fix

    def _subcommands(self) -> dict[str, argparse.ArgumentParser]:
        """This parser's subcommands by name (none for a command without any)."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    def _server_option(self, name: str) -> str:
        """Where --url/--key work, for a command that has neither: the same mistake
        typed before the command is refused in those words (remote_cli.target)."""
        from local.remote_cli import COMMANDS, SERVER_OPTIONS

        words = self.prog.split()
        if name not in SERVER_OPTIONS or len(words) < 2 or words[0] != "spool":
            return ""
        if words[1] in COMMANDS:
            return ""
        return f": {name} works with the job commands only ({', '.join(COMMANDS)})"

    def _commands_named(self) -> list[argparse.ArgumentParser]:
        """The (sub)command parsers the words after this one's name name, outermost
        first: for `spool --tenant x dlq list`, `spool dlq` and `spool dlq list`."""
        chain: list[argparse.ArgumentParser] = []
        parser: argparse.ArgumentParser = self
        words = list(self._argv)
        while True:
            actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
            if not actions:
                return chain
            choices = actions[0].choices
            at = next((i for i, w in enumerate(words) if w in choices), None)
            if at is None:
                return chain
            parser = choices[words[at]]
            chain.append(parser)
            words = words[at + 1 :]

    def _values_joined(self, words: list[str]) -> list[str]:
        """`--option VALUE` as `--option=VALUE` where VALUE begins with one '-'.

        argparse decides whether a word is an option before it knows what precedes
        it, so a value beginning with '-' was taken for an unknown option: `spool
        status ID --wait -1s` said "unrecognized arguments: -1s" and `spool --key
        "$KEY" jobs`, with a key from secrets.token_urlsafe that began with '-' (one
        in 64), "argument --key: expected one argument". An option that takes a value
        now takes the next word as it, unless that word is an option this parser
        knows (`--wait --json`: the flag; `--wait -h`: the help) or begins with '--'
        (`--wait --jsn` is still named as a misspelt option). The value then meets
        the option's own check, which names the option and the value.

        Only this parser's options are joined, and only up to the word that names
        one of its subcommands: the rest is that subcommand's, whose parser joins
        its own."""
        commands = self._subcommands()
        joined: list[str] = []
        at = 0
        while at < len(words):
            word = words[at]
            if word == "--" or (commands and word in commands):
                return joined + words[at:]
            action = self._option_string_actions.get(word) or self._abbreviated(word)
            if (
                action is not None
                and action.nargs in (None, argparse.OPTIONAL)
                and at + 1 < len(words)
            ):
                value = words[at + 1]
                if self._dash_value(value):
                    joined.append(f"{word}={value}")
                    at += 2
                    continue
                if action.nargs is None:  # its value, whatever it says (a command's name)
                    joined += [word, value]
                    at += 2
                    continue
            joined.append(word)
            at += 1
        return joined

    def _abbreviated(self, word: str) -> argparse.Action | None:
        """The action a long option's unique abbreviation (`--wai`) names, as argparse
        takes it; None for anything else."""
        if not word.startswith("--") or "=" in word:
            return None
        found = [a for o, a in self._option_string_actions.items() if o.startswith(word)]
        return found[0] if len({id(a) for a in found}) == 1 else None

    def _dash_value(self, word: str) -> bool:
        """Whether `word`, after an option that takes a value, is that value although
        it begins with '-': not '-' alone, not '--...', not an option of this parser."""
        if not word.startswith("-") or word.startswith("--") or word == "-":
            return False
        if word in self._option_string_actions:
            return False
        # `-n3`: a short option that takes a value, with its value attached.
        short = self._option_string_actions.get(word[:2])
        return short is None or short.nargs == 0

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """A command's parser refuses what it does not know itself. argparse hands a
        subcommand's leftovers up to `spool`, whose refusal said `See spool --help`:
        a page that lists no command's options. (Nothing after a command is parsed
        by `spool` itself, so refusing here refuses exactly what it would.)

        The words are kept for error(): argparse tells it only its message."""
        args = self._values_joined(list(sys.argv[1:] if args is None else args))
        self._argv = args
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and " " in self.prog:  # a command's parser: `spool jobs`, `spool dlq list`
            self.error("unrecognized arguments: " + " ".join(extras))
        return parsed, extras


def line(problem: str, fix: str = "") -> str:
    """`spool: <problem>. <fix>` on one line, secrets masked, control characters escaped.

    The words may be a server's (a remote command's error message and details): a
    hostile one's escape sequences, printed raw, retitled, cleared and recoloured the
    terminal, so they are shown escaped as the tables show them (tables.printable)."""
    text = " ".join(problem.split()).rstrip(". ")
    if fix:
        text += ("" if text.endswith(("?", "!")) else ".") + " " + " ".join(fix.split())
    text = text.rstrip(".")
    return "spool: " + printable(redact_text(text)) + ("" if text.endswith(("?", "!")) else ".")


def payload_fix(text: str, source: str | None = None) -> str:
    """The fix for a --payload that is not JSON: JSON read from `source` (a file, or
    standard input: local/payload_source.py) is fixed there; curl's `-d @file` habit
    without the `@`, a file's name, gets the `@`; anything else, quoting."""
    if source is not None:
        return f"Fix the JSON in {source}"
    import json

    try:
        json.loads(text)  # the lenient reader: NaN, 1e999 and a name twice pass it
    except (ValueError, RecursionError):  # nested too deep for it, too
        pass
    else:  # the strict reader refused a value, not the shell's quoting
        return "The JSON is well formed: change the value the message names"
    path = text.strip()
    if path and os.path.isfile(path):
        import shlex

        return (
            "To read the JSON from that file, put @ before its name: "
            + f"--payload @{shlex.quote(path)}"
        )
    return """Quote it for the shell: --payload '{"a": 1}'"""


def validation_problem(message: str, details: Any, where: str = "payload") -> str:
    """A 422 worded as spool_client words it, imported only when one is: the client
    package brings httpx, which `spool worker` never needs."""
    from spool_client.errors import validation_problem as worded

    return worded(message, details, where)


# What changes an admit check's answer on the local store, where the user runs the handlers.
ADMIT_ADVICE = "change what its reason names"


def job_refusal_fix(details: Any, fix: str, whose: str, advice: str) -> str:
    """The fix for a refused job: `fix` ("Fix the job and try again"), or, when the
    handler's admit check refused it (details' refused_by), that it refuses the job for
    `whose` tenant, and `advice`. A per-tenant allowlist, a spent quota or
    http_request's empty SPOOL_HTTP_ALLOWLIST ended "Fix the arguments and try again",
    and no argument fixed them."""
    from chalicelib.handlers import REFUSED_BY_ADMIT

    if isinstance(details, list) and details:  # a batch's problems: each job's details
        each = [p.get("details") if isinstance(p, dict) else None for p in details]
        if all(job_refusal_fix(d, "", whose, advice) for d in each):
            details = each[0]
    if not isinstance(details, dict) or details.get("refused_by") != REFUSED_BY_ADMIT:
        return fix
    kind = details.get("type")
    handler = f"the {kind!r} handler's" if isinstance(kind, str) else "the handler's"
    return f"{handler[0].upper()}{handler[1:]} admit check refuses this job for {whose}: {advice}"


def _validation_problem(exc: ValidationFailed) -> str:
    return validation_problem(exc.message, exc.details)


def _pydantic_validation_error() -> type[ValidationError] | None:
    """pydantic's ValidationError (pydantic_core's), if pydantic is loaded: when it is
    not, nothing can have raised one. Not imported for the check: the remote commands,
    --help and --version load no pydantic (a large part of the engine's import time)."""
    module = sys.modules.get("pydantic_core")
    return None if module is None else module.ValidationError  # type: ignore[no-any-return]


def explain(exc: BaseException) -> CliFailure:
    """The one-line failure for an exception, or a generic one for the unexpected."""
    if isinstance(exc, CliFailure):
        return exc
    if type(exc).__module__.startswith("spool_client."):  # the remote commands' client
        from local.remote_cli import explain as explain_remote

        return explain_remote(exc)  # type: ignore[arg-type]
    if isinstance(exc, ConfigError):
        return UsageError(str(exc))
    if isinstance(exc, UnknownJobType):
        known = ", ".join((exc.details or {}).get("known", [])) or "none"
        return UsageError(
            exc.message.partition(UNKNOWN_TYPE_FIX_START)[0],
            f"Known types: {known}; add yours with SPOOL_HANDLERS "
            "(the demo types need SPOOL_DEMO_HANDLERS=1). Without SPOOL_URL (or --url) "
            "this command uses the local store and this process's handlers; to send the "
            "job to a running server, export SPOOL_URL and SPOOL_API_KEY as `make run` "
            "printed them",
        )
    if isinstance(exc, ValidationFailed):
        fix = job_refusal_fix(exc.details, "Fix the job and try again", "this tenant", ADMIT_ADVICE)
        return UsageError(_validation_problem(exc), fix)
    validation_error = _pydantic_validation_error()
    if validation_error is not None and isinstance(exc, validation_error):
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "job"
        return UsageError(f"{where}: {first['msg']}", "Fix the option and try again")
    if isinstance(exc, StoreNotMigrated):
        # Each store's message says its own fix: `spool db migrate` is Postgres's
        # only (its message says it), a DynamoDB table comes from infra/ or create=1.
        return CliFailure(exc.message)
    if isinstance(exc, StoreUnavailable):
        named = "SPOOL_STORE_URL" in exc.message  # the store already said what to check
        fix = "Check SPOOL_STORE_URL and that the store is running, then try again"
        return CliFailure(exc.message, "" if named else fix)
    if isinstance(exc, JobNotFound):
        job_id = (exc.details or {}).get("id", "")
        if isinstance(job_id, str) and not is_utf8(job_id):
            # argv bytes that were not UTF-8 (lone surrogates): the id was refused unread
            return UsageError(NOT_UTF8, NOT_UTF8_FIX)
        return CliFailure(
            f"job {job_id} not found" if job_id else exc.message,
            "Check the id and --tenant, and that SPOOL_STORE_URL names the store it is in",
        )
    if isinstance(exc, BadRequest | PayloadTooLarge):
        # What was typed (a --cursor that is no page's): exit 2, as the same command
        # against a server says it (its 400); it was 1 here, "failed at run time".
        return UsageError(exc.message)
    if isinstance(exc, InvalidTransition):
        return CliFailure(exc.message)
    if isinstance(exc, SpoolError):
        return CliFailure(exc.message)
    if isinstance(exc, KeyboardInterrupt):
        return CliFailure("interrupted", code=EXIT_INTERRUPTED)
    if isinstance(exc, UnicodeEncodeError) and exc.reason == "surrogates not allowed":
        # argv bytes that were not UTF-8 arrive as lone surrogates; no store takes them
        return UsageError(NOT_UTF8, NOT_UTF8_FIX)
    if isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and "can't start new thread" in str(exc)
    ):
        return _short_of_resources(exc)
    detail = str(exc).strip()
    return CliFailure(
        f"unexpected error: {type(exc).__name__}" + (f": {detail}" if detail else ""),
        f"Rerun with {DEBUG_VARIABLE}=1 to see the traceback",
    )


def _short_of_resources(exc: BaseException) -> CliFailure:
    """The process out of memory, or refused a thread: what ran short and what to change.
    `spool worker` under a memory limit said "unexpected error: MemoryError" (a claim
    of large payloads) or "...: RuntimeError: can't start new thread", and to rerun with
    SPOOL_DEBUG=1, whose traceback only shows where it ran short."""
    fix = (
        "Raise the process's limits (ulimit -v, ulimit -u, a container's memory) or "
        "lower --concurrency (SPOOL_CONCURRENCY): each running job holds its payload "
        "and a thread"
    )
    if isinstance(exc, MemoryError):
        return CliFailure("out of memory (MemoryError): the process may allocate no more", fix)
    said = str(exc).strip()
    if "ulimit" not in said:  # Python's own words, from a thread other than the pool's
        said = (
            f"could not start a thread ({said}): the process is at its limit of threads "
            "(ulimit -u) or short of address space for another thread's stack (ulimit -v)"
        )
    return CliFailure(said, fix)


def check_debugging() -> None:
    """Refuse a malformed SPOOL_DEBUG (ConfigError), as every other flag is: `spool`
    calls this first, so `debugging()` below may treat one as off."""
    parse_flag(DEBUG_VARIABLE, os.environ.get(DEBUG_VARIABLE))


def check_setting_names(env: Mapping[str, str] | None = None) -> None:
    """Refuse a SPOOL_* variable that is a misspelt setting (UsageError, exit 2).

    Nothing reads SPOOL_STORE_URL with its last letter dropped, so the setting meant
    keeps its default without a word: `spool enqueue` stored the job in the local SQLite
    file, not the Postgres it was meant for, and SPOOL_URL misspelt did the same to a job
    meant for a server; the name cut short (no _URL) did the same. Names far from
    every setting, and beginning none, are left alone: other programs' and handlers'
    own (settings_catalog.misspelt says how far is far)."""
    from chalicelib.settings_catalog import misspelt_refusal

    refusal = misspelt_refusal(os.environ if env is None else env)
    if refusal is not None:
        raise UsageError(*refusal)


def warn_unread_settings(env: Mapping[str, str] | None = None) -> None:
    """Name, on stderr, each SPOOL_* variable nothing in Spool reads and too far from
    every setting to be refused (settings_catalog.unread): SPOOL_HANDLERS written with
    _MODULES for its S started `spool worker` on the built-in types, silently. A
    notice, not a refusal: handlers may read SPOOL_* names of their own. Only where a
    process that loads handlers starts (`spool serve`, `spool worker`, the poller)."""
    from chalicelib.settings_catalog import warn_unread

    warn_unread(os.environ if env is None else env)


def debugging() -> bool:
    """SPOOL_DEBUG, on the error path: never raises (check_debugging refused a bad one)."""
    try:
        return parse_flag(DEBUG_VARIABLE, os.environ.get(DEBUG_VARIABLE))
    except ConfigError:
        return False


def report(exc: BaseException) -> int:
    """Print the exception's one line on stderr; return the exit code."""
    failure = explain(exc)
    print(line(failure.problem, failure.fix), file=sys.stderr, flush=True)
    return failure.code
