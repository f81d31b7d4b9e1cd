"""The GitHub composite action's step (action.yml): ``poetry lambda-zip --json`` from the
action's inputs, each zip's path and ``code_sha256`` written to ``$GITHUB_OUTPUT``.

Inputs come as the environment variables action.yml sets (``INPUT_RUNTIME``, ``INPUT_ARCH``,
``INPUT_FUNCTIONS``, ``INPUT_ARGS``, ``INPUT_DIRECTORY``). Outputs:

- ``zips``: a JSON list, one ``{"function", "kind", "path", "sha256", "code_sha256"}`` per zip;
- ``paths``: every zip's path, one a line;
- ``path``, ``code-sha256``: the function zip's, when the run wrote exactly one (empty if not);
- ``layer-path``, ``layer-code-sha256``: the same for a layer.

Standard library only: it runs with whatever ``python3`` the runner has.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import uuid
from typing import Any


def command(env: dict[str, str]) -> list[str]:
    """The ``poetry lambda-zip`` command line the inputs ask for."""
    words = ["poetry", "lambda-zip", "-C", env.get("INPUT_DIRECTORY") or "."]
    words += env.get("INPUT_FUNCTIONS", "").replace(",", " ").split()
    for option, name in (("--runtime", "INPUT_RUNTIME"), ("--arch", "INPUT_ARCH")):
        value = env.get(name, "").strip()
        if value:
            words += [option, value]
    return [*words, *shlex.split(env.get("INPUT_ARGS", "")), "--json"]


def zips(document: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every zip of a ``--json`` document (one build or a functions table), and the errors."""
    if "functions" in document:
        runs = [(f["function"], f.get("result"), f.get("error")) for f in document["functions"]]
    else:
        runs = [(None, document if document.get("ok", True) else None, document.get("error"))]
    found: list[dict[str, Any]] = []
    errors: list[str] = []
    for function, result, error in runs:
        if result is None:
            where = f"{function}: " if function else ""
            errors.append(f"{where}{error['message']}\n  {error.get('fix') or ''}".rstrip())
            continue
        for output in result["outputs"]:
            found.append(
                {
                    "function": function,
                    "kind": output["kind"],
                    "path": output["path"],
                    "sha256": output["sha256"],
                    "code_sha256": output["code_sha256"],
                }
            )
    return found, errors


def github_output(values: dict[str, str]) -> str:
    """``$GITHUB_OUTPUT`` lines: ``name<<DELIMITER`` / value / ``DELIMITER`` for each value,
    with a delimiter no value contains (GitHub's multi-line format)."""
    text = ""
    for name, value in values.items():
        delimiter = f"EOF_{uuid.uuid4().hex}"
        assert delimiter not in value
        text += f"{name}<<{delimiter}\n{value}\n{delimiter}\n"
    return text


def outputs(found: list[dict[str, Any]]) -> dict[str, str]:
    values = {
        "zips": json.dumps(found),
        "paths": "\n".join(z["path"] for z in found),
    }
    for kind, prefix in (("function", ""), ("layer", "layer-")):
        of_kind = [z for z in found if z["kind"] == kind]
        (single,) = of_kind if len(of_kind) == 1 else [None]
        values[f"{prefix}path"] = single["path"] if single else ""
        values[f"{prefix}code-sha256"] = single["code_sha256"] if single else ""
    return values


def main(env: dict[str, str]) -> int:
    words = command(env)
    print(f"$ {shlex.join(words)}", file=sys.stderr, flush=True)
    # stderr (the progress lines) goes to the job's log as it is written; stdout is the JSON.
    run = subprocess.run(words, stdout=subprocess.PIPE, text=True, check=False)
    try:
        document = json.loads(run.stdout)
    except json.JSONDecodeError:
        print(f"poetry lambda-zip printed no JSON document:\n{run.stdout}", file=sys.stderr)
        return run.returncode or 1
    found, errors = zips(document)
    for error in errors:
        # A workflow command is one line: GitHub's escapes for %, CR and LF.
        escaped = error.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        print(f"::error::{escaped}", file=sys.stderr)
    for zip_file in found:
        name = f"{zip_file['function']} " if zip_file["function"] else ""
        print(f"{name}{zip_file['kind']}: {zip_file['path']} code_sha256 {zip_file['code_sha256']}")
    target = env.get("GITHUB_OUTPUT")
    if target:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(github_output(outputs(found)))
    return run.returncode


if __name__ == "__main__":
    sys.exit(main(dict(os.environ)))
