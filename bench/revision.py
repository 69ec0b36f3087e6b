"""An earlier revision's site, for benchmarks that print "before" next to "now".

    with exported("cf173ec") as code:            # a plain copy of that commit's files
        DaphneServer(database, code=code)        # serves the site as it was then

`git archive` only reads the repository (no worktree, no checkout): the copy lives in a
temporary directory removed afterwards. Its servers run with this checkout's virtualenv,
so the earlier revision must work with the packages installed now (the schema too: the
benchmarks migrate their databases with the current code).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def exported(revision: str) -> Iterator[Path]:
    """The files of `revision` (any git revision name) in a temporary directory."""
    target = Path(tempfile.mkdtemp(prefix=f"live-carts-{revision[:12]}-"))
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", revision],
            check=True,
            capture_output=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(target, filter="data")
        yield target
    finally:
        shutil.rmtree(target, ignore_errors=True)


def describe(revision: str) -> str:
    """`revision` as its short hash and subject line."""
    return subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%h %s", revision],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
