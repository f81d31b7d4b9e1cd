"""The steps that finish an installed tree, the same here and in the build image: merge trees,
slim, precompile. Also the protocol between the docker builder and the container's entry script.

Standard library only, compatible with every Lambda Python (3.9+): the docker builder ships this
file into the container next to its entry script (``builders/_inside.py``); the local builder
imports it.
"""

import filecmp
import importlib.util
import os
import py_compile
import re
import shutil
import subprocess
from concurrent.futures import ProcessPoolExecutor
from typing import Any
from typing import Optional

__all__ = [
    "COLLECT_TIMEOUT",
    "CONFLICT",
    "EXIT_MARK",
    "LAMBDA_PYTHON",
    "PYTHON_MISMATCH",
    "REPORT_MARK",
    "SHARED_LIBRARY",
    "TARGET",
    "WORK",
    "compile_tree",
    "finish_tree",
    "join_pem",
    "merge_trees",
    "slim_tree",
]

#: The interpreter of Lambda's Python images (a script's ``#!python`` line becomes it).
LAMBDA_PYTHON = "/var/lang/bin/python3"
#: A shared library, which ``strip`` can slim: ``x.so`` or ``x.so.1.2``.
SHARED_LIBRARY = re.compile(r"\.so(\.|$)")

# The protocol between the docker builder and the entry script in the container.
#: Where the job's files are put in the container.
WORK = "/tmp/lambda-zip"
#: The finished tree, fetched by the docker builder.
TARGET = os.path.join(WORK, "target")
#: Exit codes: the image's Python is not the runtime's; two trees hold one path differently.
PYTHON_MISMATCH = 86
CONFLICT = 87
#: Output lines: how the script ended, and what the steps did (JSON).
EXIT_MARK = "lambda-zip: exit "
REPORT_MARK = "lambda-zip: report "
#: How long a finished build waits for the host to fetch its result before it goes away.
COLLECT_TIMEOUT = 300


def join_pem(bundles: list[bytes]) -> bytes:
    """PEM bundles as one: each ends with a newline, so no certificate runs into the next."""
    return b"".join(bundle.rstrip(b"\n") + b"\n" for bundle in bundles)


def merge_trees(sources: list[str], target: str) -> Optional[str]:
    """Copy the trees into one (pip --target skips directories that exist); return the first
    path two trees hold with different content, or None. The first tree is moved, not copied,
    when there is no target yet."""
    if sources and not os.path.exists(target):
        os.rename(sources[0], target)
        sources = sources[1:]
    os.makedirs(target, exist_ok=True)
    for source in sources:
        for directory, _, files in os.walk(source):
            destination = os.path.join(target, os.path.relpath(directory, source))
            os.makedirs(destination, exist_ok=True)
            for name in files:
                origin, final = os.path.join(directory, name), os.path.join(destination, name)
                if os.path.lexists(final) and not filecmp.cmp(origin, final, shallow=False):
                    return os.path.relpath(final, target)
                shutil.copy2(origin, final, follow_symlinks=False)
    return None


def finish_tree(
    target: str, slim: bool, strip: Optional[str], compile_prefix: Optional[str]
) -> dict[str, Any]:
    """Slim (stripping shared libraries with ``strip``, if there is one for the target) and
    precompile ``target`` as asked; the report of each step that ran."""
    report: dict[str, Any] = {}
    if slim:
        report["slim"] = slim_tree(target, strip)
    if compile_prefix is not None:
        report["compile"] = compile_tree(target, compile_prefix)
    return report


def slim_tree(target: str, strip: Optional[str]) -> dict[str, int]:
    """Remove what never runs on Lambda; never a dist-info directory (importlib.metadata).
    ``strip`` is the strip program for the target's libraries, if there is one."""
    removed = saved = stripped = unstripped = 0
    for directory, subdirectories, files in os.walk(target, topdown=True):
        relative = os.path.relpath(directory, target)
        depth = 0 if relative == "." else relative.count(os.sep) + 1
        for name in list(subdirectories):
            doomed = name == "__pycache__" or (name in TEST_DIRECTORIES and depth >= 1)
            if doomed and not relative.endswith(".dist-info"):
                path = os.path.join(directory, name)
                for root, _, names in os.walk(path):
                    for file in names:
                        saved += os.lstat(os.path.join(root, file)).st_size
                        removed += 1
                shutil.rmtree(path)
                subdirectories.remove(name)
        for name in files:
            path = os.path.join(directory, name)
            if name.endswith(".pyi"):
                saved += os.lstat(path).st_size
                removed += 1
                os.remove(path)
            elif SHARED_LIBRARY.search(name) and not os.path.islink(path):
                before = os.path.getsize(path)
                if not strip:
                    unstripped += 1
                elif subprocess.call([strip, "--strip-debug", path]) == 0:
                    saved += before - os.path.getsize(path)
                    stripped += 1
    return {"files_removed": removed, "bytes_saved": saved, "libraries_stripped": stripped,
            "libraries_unstripped": unstripped}  # fmt: skip


#: Directories of tests inside a package (not at the tree's top): slimmed away, never compiled.
TEST_DIRECTORIES = ("tests", "test")
#: Trees of at most this many modules compile in this process: starting workers would cost
#: more than the compiling (a project's few files after an edit).
INLINE_COMPILE = 32


def compile_tree(target: str, prefix: str) -> dict[str, int]:
    """PEP 552 unchecked-hash .pyc for this interpreter: valid whatever the mtimes after unzip,
    identical across builds. Tracebacks name the path the file has on Lambda: ``prefix`` plus
    its path in the tree. Modules in ``tests``/``test`` directories inside packages (those
    ``slim_tree`` removes) stay source alone: a handler never imports them, and in packages
    such as pandas they are most of the modules (and of the bytecode's bytes)."""
    jobs = []
    tests = 0
    for directory, subdirectories, files in os.walk(target):
        subdirectories.sort()
        relative_directory = os.path.relpath(directory, target)
        parts = [] if relative_directory == "." else relative_directory.split(os.sep)
        in_tests = any(part in TEST_DIRECTORIES for part in parts[1:])
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            if in_tests:
                tests += 1
                continue
            source = os.path.join(directory, name)
            relative = os.path.relpath(source, target).replace(os.sep, "/")
            jobs.append((source, f"{prefix}/{relative}"))
    if len(jobs) <= INLINE_COMPILE:
        results = [_compile_one(job) for job in jobs]
    else:
        with ProcessPoolExecutor() as pool:
            results = list(pool.map(_compile_one, jobs, chunksize=64))
    return {"compiled": results.count(True), "failed": results.count(False), "tests": tests}


def _compile_one(job: tuple[str, str]) -> bool:
    source, shown = job
    try:
        py_compile.compile(
            source,
            cfile=importlib.util.cache_from_source(source),
            dfile=shown,
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
    except (py_compile.PyCompileError, SyntaxError, UnicodeDecodeError, ValueError):
        return False  # e.g. Python 2 test data shipped in a wheel: pip skips these too
    return True


if __name__ == "__main__":
    # `python -I tree_steps.py compile TARGET PREFIX`: the image's compile step, run by an
    # interpreter of the runtime's version on this machine (in a process as fresh as the
    # container's, so that marshal sees the same objects); prints the report.
    import json
    import sys

    print(json.dumps(compile_tree(sys.argv[2], sys.argv[3])))
