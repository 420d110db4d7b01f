"""One thread's cgroup cell across many jobs (actors.containment.CgroupCell, which keeps its
`cgroup.procs` and `cgroup.events` open between jobs), through the real runner."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.containment import CgroupContainment, ContainmentUnavailable
from actors.output import OutputTail
from actors.runner import CommandSpec, run
from tests.integration.test_containment import alive
from tests.support import wait_for

ESCAPE = "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! > {pidfile}; cat /proc/self/cgroup"


@pytest.fixture
def containment() -> Iterator[CgroupContainment]:
    try:
        made = CgroupContainment.create()
    except ContainmentUnavailable as exc:
        pytest.skip(f"no cgroup containment here: {exc}")
    yield made
    made.close()


def run_in(containment: CgroupContainment, argv: list[str]) -> tuple[str, int | None, str]:
    tail = OutputTail(1 << 16)
    spec = CommandSpec(argv=argv, cwd=Path("/tmp"), env={"PATH": os.environ["PATH"]}, timeout=10)
    result = run(spec, tail, should_stop=lambda: None, kill_grace=1.0, cell=containment.cell())
    return result.ended, result.returncode, tail.snapshot().data.decode()


def test_each_job_of_a_thread_runs_in_its_cell_and_leaves_nothing(
    containment: CgroupContainment, tmp_path: Path
) -> None:
    cell = containment.cell()
    for n in range(5):
        pidfile = tmp_path / f"escapee-{n}"
        ended, code, output = run_in(containment, ["/bin/sh", "-c", ESCAPE.format(pidfile=pidfile)])
        assert (ended, code) == ("exited", 0), output
        unified = [line for line in output.splitlines() if line.startswith("0::")]
        assert unified and unified[0].endswith("/" + cell.path.name), output
        escapee = int(pidfile.read_text())
        wait_for(lambda p=escapee: not alive(p), timeout=10, what=f"escapee of job {n}")
        assert containment.cell() is cell  # emptied: the same cell serves the next job
    assert not cell.populated()


def test_a_program_behind_the_cell_shell_is_still_looked_for(
    containment: CgroupContainment,
) -> None:
    ended, _, _ = run_in(containment, ["no-such-program-x"])
    assert ended == "failed_to_start"
    ended, code, output = run_in(containment, ["echo", "argv", "$HOME"])
    assert (ended, code, output) == ("exited", 0, "argv $HOME\n")
