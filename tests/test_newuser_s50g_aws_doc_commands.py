"""docs/aws.md's deploy commands, read as a new user types them (no AWS here: what
the commands are given and name is checked, not what AWS answers).

- `aws cloudformation package` writes YAML unless given `--use-json`: the doc named
  its output `out/packaged.json` and handed it on, so the file named JSON held YAML
  (deploy reads either; `jq`, `python -m json.tool` or an editor's JSON mode does not).
- The stack's `EndpointURL` output ends with a slash (Chalice's template:
  `https://${RestAPI}.execute-api.${AWS::Region}.${AWS::URLSuffix}/api/`), so the
  doc's `"$ENDPOINT_URL/jobs"` asked for `/api//jobs`, a path with an empty segment
  that no route of the API has.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "aws.md"
# Chalice's EndpointURL output, with the stack's values put in (stage "api").
ENDPOINT_URL = "https://abc123.execute-api.us-east-1.amazonaws.com/api/"


def commands() -> list[list[str]]:
    """Every command of the doc's sh blocks, continuation lines joined, comments cut."""
    found = []
    for block in re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.DOTALL):
        for command in block.replace("\\\n", " ").splitlines():
            words = shlex.split(command, comments=True)
            if words:
                found.append(words)
    return found


def test_the_packaged_template_named_json_is_written_as_json() -> None:
    packages = [c for c in commands() if c[:3] == ["aws", "cloudformation", "package"]]
    assert packages
    for command in packages:
        output = command[command.index("--output-template-file") + 1]
        if output.endswith(".json"):
            assert "--use-json" in command, command


def test_the_documented_requests_to_the_endpoint_name_a_route() -> None:
    urls = [
        word.replace("${ENDPOINT_URL}", ENDPOINT_URL).replace("$ENDPOINT_URL", ENDPOINT_URL)
        for command in commands()
        for word in command
        if "ENDPOINT_URL" in word and command[0] == "curl"
    ]
    assert urls
    for url in urls:
        path = urlsplit(url).path
        assert path.startswith("/api/") and "//" not in path, url
