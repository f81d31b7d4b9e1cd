"""Lock a fixture project as an ordinary user would have it locked.

Poetry's default source cannot be used on machines whose index answers only the simple API, so
this adds the default index's simple URL as a temporary primary source, runs `poetry lock`,
then removes every trace of that source and recomputes the content-hash with Poetry's Locker.

    python scripts/relock_fixture.py fixtures/NAME [fixtures/OTHER ...]

POETRY=/path/to/poetry locks with another Poetry (e.g. 1.8 for a lock of format 2.0).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import tomlkit
from pip._internal.models.index import PyPI
from poetry.core.pyproject.toml import PyProjectTOML
from poetry.packages.locker import Locker

SOURCE_NAME = "relock-temporary"


def relock(project: Path) -> None:
    pyproject = project / "pyproject.toml"
    original = pyproject.read_text()
    document = tomlkit.parse(original)
    sources = (
        document.setdefault("tool", {}).setdefault("poetry", {}).setdefault("source", tomlkit.aot())
    )
    sources.append({"name": SOURCE_NAME, "url": PyPI.simple_url, "priority": "primary"})
    pyproject.write_text(tomlkit.dumps(document))
    try:
        poetry = os.environ.get("POETRY", "").split() or [sys.executable, "-m", "poetry"]
        subprocess.run([*poetry, "lock", "--no-interaction"], cwd=project, check=True)
    finally:
        pyproject.write_text(original)

    lock_path = project / "poetry.lock"
    lock = tomlkit.parse(lock_path.read_text())
    for package in lock["package"]:
        source = package.get("source")
        if source is not None and source.get("reference") == SOURCE_NAME:
            del package["source"]
    data = PyProjectTOML(pyproject).data
    # Poetry < 2.3 hashed without [dependency-groups]; Poetry checks old locks the same way.
    with_groups = lock["metadata"]["lock-version"] != "2.0"
    lock["metadata"]["content-hash"] = Locker(lock_path, data)._get_content_hash(
        with_dependency_groups=with_groups
    )
    lock_path.write_text(tomlkit.dumps(lock))
    if SOURCE_NAME in lock_path.read_text() or PyPI.netloc in lock_path.read_text():
        raise SystemExit(f"{lock_path} still names the temporary source")


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        relock(Path(argument))
