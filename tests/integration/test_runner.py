"""The subprocess runner, with real short commands: exit codes, output, timeouts, stops."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from actors.output import OutputTail
from actors.runner import CommandSpec, run
from tests.support import PROCESS_DEADLINE, processes_with, wait_for


def spec(command: str, timeout: float = 10, cwd: Path | None = None, **env: str) -> CommandSpec:
    return CommandSpec(
        argv=["/bin/sh", "-c", command],
        cwd=cwd or Path("/tmp"),
        env={"PATH": os.environ["PATH"], **env},
        timeout=timeout,
    )


def never() -> None:
    return None


def run_to_end(command_spec: CommandSpec, limit: int = 1 << 20, **kwargs):  # type: ignore[no-untyped-def]
    tail = OutputTail(limit)
    kwargs.setdefault("should_stop", never)
    kwargs.setdefault("kill_grace", 1.0)
    result = run(command_spec, tail, **kwargs)
    return result, tail.snapshot()


def test_exit_status_and_interleaved_output() -> None:
    result, output = run_to_end(spec("echo out1; echo err1 >&2; echo out2; exit 3"))
    assert result.ended == "exited"
    assert result.returncode == 3
    assert output.data == b"out1\nerr1\nout2\n"


def test_success_and_environment_and_cwd(tmp_path: Path) -> None:
    result, output = run_to_end(spec("pwd; echo $GREETING", cwd=tmp_path, GREETING="hi"))
    assert (result.ended, result.returncode) == ("exited", 0)
    assert output.data == f"{tmp_path}\nhi\n".encode()


def test_argv_runs_without_a_shell() -> None:
    command = CommandSpec(
        argv=["echo", "$HOME", "a;b"], cwd=Path("/tmp"), env={"PATH": os.environ["PATH"]}, timeout=5
    )
    result, output = run_to_end(command)
    assert result.returncode == 0
    assert output.data == b"$HOME a;b\n"


def test_missing_program_fails_to_start() -> None:
    command = CommandSpec(
        argv=["no-such-program-x"], cwd=Path("/tmp"), env={"PATH": "/bin"}, timeout=5
    )
    result, _ = run_to_end(command)
    assert result.ended == "failed_to_start"
    assert result.error is not None and "could not start" in result.error


def test_killed_by_a_signal_from_outside() -> None:
    result, _ = run_to_end(spec("kill -9 $$"))
    assert (result.ended, result.returncode) == ("exited", -9)


def test_timeout_kills_the_whole_group_including_grandchildren() -> None:
    marker = f"sleep 3{uuid.uuid4().int % 1000:03d}"
    started = time.monotonic()
    result, _ = run_to_end(spec(f"{marker} & {marker} & wait", timeout=0.5))
    elapsed = time.monotonic() - started
    assert result.ended == "timed_out"
    assert elapsed < PROCESS_DEADLINE / 2  # killed at its timeout, not when the sleeps end
    assert processes_with(marker) == []


def test_a_command_ignoring_sigterm_gets_sigkill_after_the_grace() -> None:
    marker = f"sleep 4{uuid.uuid4().int % 1000:03d}"
    started = time.monotonic()
    result, _ = run_to_end(spec(f"trap '' TERM; {marker} & {marker}", timeout=0.3), kill_grace=0.7)
    elapsed = time.monotonic() - started
    assert result.ended == "timed_out"
    assert result.returncode == -9
    assert 0.9 <= elapsed < PROCESS_DEADLINE / 2
    assert processes_with(marker) == []


def test_background_leftovers_die_when_the_command_ends() -> None:
    marker = f"sleep 5{uuid.uuid4().int % 1000:03d}"
    result, output = run_to_end(spec(f"({marker} &) ; echo done"))
    assert (result.ended, result.returncode) == ("exited", 0)
    assert output.data == b"done\n"
    assert processes_with(marker) == []


def test_stop_request_ends_the_command_with_its_reason() -> None:
    marker = f"sleep 6{uuid.uuid4().int % 1000:03d}"
    deadline = time.monotonic() + 0.4
    result, _ = run_to_end(
        spec(f"{marker} & {marker}"),
        should_stop=lambda: "cancelled" if time.monotonic() > deadline else None,
        poll_interval=0.05,
    )
    assert result.ended == "stopped"
    assert result.stop_reason == "cancelled"
    wait_for(lambda: processes_with(marker) == [], timeout=PROCESS_DEADLINE, what="no survivors")


def test_huge_output_keeps_only_the_tail_within_the_limit() -> None:
    result, output = run_to_end(
        spec("head -c 20000000 /dev/zero | tr '\\0' 'x'; printf END"), limit=4096
    )
    assert result.returncode == 0
    assert len(output.data) == 4096
    assert output.data.endswith(b"xxxEND")
    assert output.offset == 20000003 - 4096
    assert output.total == 20000003


def test_on_start_gets_the_pid_and_ticks_happen_while_running() -> None:
    pids: list[int] = []
    ticks: list[float] = []
    result, _ = run_to_end(
        spec("sleep 0.3"), on_start=pids.append, on_tick=lambda: ticks.append(1), poll_interval=0.05
    )
    assert result.returncode == 0
    assert len(pids) == 1 and pids[0] > 0
    assert len(ticks) >= 2
