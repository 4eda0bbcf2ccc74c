"""`python -m local.sqs_poller` (docs/aws.md, "Offline, the same shape") refuses option
values it cannot use before it starts, naming the option and its range.

`--wait 50` started and then logged "store unavailable (... WaitTimeSeconds is
invalid ...): the SQS poller waits it out" for ever, a usage mistake shown as an outage;
`--window -1`, `--idle-exit nan` and `--max-seconds -5` were taken without a word.
"""

from __future__ import annotations

import pytest

from local import sqs_poller


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            ["--wait", "50"],
            "argument --wait: must be a whole number from 0 to 20 (SQS's long poll), not '50'",
        ),
        (
            ["--wait", "abc"],
            "argument --wait: must be a whole number from 0 to 20 (SQS's long poll), not 'abc'",
        ),
        (["--wait", "-1"], "argument --wait: must be a whole number from 0 to 20"),
        (["--window", "-1"], "argument --window: must be a number of seconds from 0 to 300"),
        (["--window", "301"], "argument --window: must be a number of seconds from 0 to 300"),
        (["--window", "nan"], "argument --window: must be a number of seconds from 0 to 300"),
        (["--idle-exit", "nan"], "argument --idle-exit: must be a number of seconds above 0"),
        (["--idle-exit", "0"], "argument --idle-exit: must be a number of seconds above 0"),
        (["--max-seconds", "-5"], "argument --max-seconds: must be a number of seconds above 0"),
        (["--max-seconds", "inf"], "argument --max-seconds: must be a number of seconds above 0"),
    ],
)
def test_an_option_value_it_cannot_use_is_refused_before_it_starts(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        sqs_poller.main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert says in err, err
    assert "invalid int value" not in err and "invalid float value" not in err
