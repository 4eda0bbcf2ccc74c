"""What `spool COMMAND --help` says before its options: what the command does and,
for those that start something or read the store, where their settings come from.

argparse shows a subcommand's `help=` only in its parent's list; the command's own
`--help` opened on its options with no word of what it does. `describe` gives each
command a description after the parser is built: the longer text below where a
newcomer needs more than the list's line, the line itself otherwise, so a command
added later gets one too.
"""

from __future__ import annotations

import argparse

STORE = "The store is SPOOL_STORE_URL (default sqlite:///.spool/spool.db, in this folder)."

# One paragraph each: argparse wraps it to the terminal's width.

DETAILS: dict[tuple[str, ...], str] = {
    ("serve",): f"""\
Serve the API, the dashboard (/ui) and an emulated worker on http://HOST:PORT
(app.py behind waitress; `make run` runs this). API keys come from
SPOOL_API_KEYS (key=tenant,...); without any, it makes a development key for
tenant 'default' for this run and prints it, with the export line that points
the command line and the Python client at the server. {STORE}
Ctrl-C finishes running requests and jobs; a second Ctrl-C stops at once.""",
    ("worker",): f"""\
Run jobs: claim due jobs, run them through the handlers of the modules named in
SPOOL_HANDLERS (and the demo handlers echo, sleep and fail with
SPOOL_DEMO_HANDLERS=true), retry or bury them, and fire periodic schedules.
{STORE} Until SIGTERM or Ctrl-C (running jobs finish; a second Ctrl-C
stops at once), or with --burst until nothing is due.""",
    ("top",): f"""\
The overview (jobs by state per queue, the oldest due job, live workers), redrawn
in the terminal. It reads the local store, not the server at SPOOL_URL. {STORE}
Where there is none it says so, and creates none.""",
    ("enqueue",): """\
Add a job: on the local store, checked as POST /enqueue checks it; with --url
(or SPOOL_URL) and --key (or SPOOL_API_KEY), on that server. Prints the job's id.""",
}


def describe(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> None:
    """Give every subcommand under `parser` that has no description one, and every
    list of subcommands a name made of its choices: argparse names a missing one by
    its `dest` otherwise ("the following arguments are required: dlq_command")."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        if action.metavar is None:  # the same text help shows for it by default
            action.metavar = "{" + ",".join(action.choices) + "}"
        lines = {choice.dest: choice.help for choice in action._choices_actions}
        for name, child in action.choices.items():
            words = (*path, name)
            if not child.description:
                text = DETAILS.get(words)
                if text is None:
                    line = lines.get(name) or name
                    text = f"{line[0].upper()}{line[1:]}."
                child.description = text
            describe(child, words)


class Version(argparse.Action):
    """`spool --version`: the installed distribution's version, looked up only when
    asked (importlib.metadata reads files: no cost to every other command)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        import importlib.metadata

        try:
            version = importlib.metadata.version("spool")
        except importlib.metadata.PackageNotFoundError:  # run from a checkout not installed
            version = "(not installed: run `make venv`)"
        print(f"spool {version}")
        parser.exit()
