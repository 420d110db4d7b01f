"""Schemathesis fuzzes the API from its own /openapi.json, authenticated, against a real server.

Any 5xx, any response that breaks the document, any schema-valid request refused or invalid one
accepted fails the test. The coverage phase runs without `negative_data_rejection`: for a body
whose schema holds an `anyOf` (command or argv), that phase reports a branch's `required` as
violated even when the other branch holds (checked with jsonschema_rs); the fuzzing and stateful
phases run every check.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import TEST_TOKEN, Api

ST = str(Path(sys.executable).with_name("st"))
REPO = Path(__file__).resolve().parents[2]
SEED = os.environ.get("JOBRUNNER_FUZZ_SEED", "20261128")
EXAMPLES = os.environ.get("JOBRUNNER_FUZZ_EXAMPLES", "40")


def schemathesis(api: Api, *args: str) -> tuple[int, str]:
    result = subprocess.run(
        [
            ST,
            "run",
            f"{api.base_url}/openapi.json",
            "-H",
            f"Authorization: Bearer {TEST_TOKEN}",
            "--max-examples",
            EXAMPLES,
            "--seed",
            SEED,
            "--workers",
            "1",
            "--no-color",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        # the fuzzer reads output without following: a follow stream of a job that never
        # runs (no worker serves the fuzzed queues) stays open until the job is final
        env=dict(os.environ, SCHEMATHESIS_HOOKS="tests.fuzz_hooks", PYTHONPATH=str(REPO)),
    )
    return result.returncode, result.stdout + result.stderr


def cases(output: str) -> int:
    match = re.search(r"(\d+) generated", output)
    return int(match.group(1)) if match else 0


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("phases", "checks"),
    [
        ("examples,fuzzing,stateful", ["--checks", "all"]),
        ("coverage", ["--checks", "all", "--exclude-checks", "negative_data_rejection"]),
    ],
)
def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    api: Api, phases: str, checks: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = schemathesis(api, "--phases", phases, *checks)
    generated = cases(output)
    with capsys.disabled():
        print(f"\nschemathesis {phases}: {generated} cases, exit {code}")
    assert code == 0, output[-6000:]
    assert generated > 100, output[-3000:]
    assert "500" not in re.findall(r"\[(\d{3})\]", output)
