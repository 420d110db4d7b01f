"""The `jobrunner` client commands, run as real processes against a real server and worker."""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest

from tests.support import JOBRUNNER, TEST_TOKEN, Api, free_port, processes_with, wait_for


def cli_env(url: str, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "JOBRUNNER_URL": url,
        "JOBRUNNER_TOKEN": TEST_TOKEN,
        **extra,
    }


def run(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [JOBRUNNER, *args], env=cli_env(url, **env), capture_output=True, text=True, timeout=60
    )


@contextmanager
def started(url: str, *args: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """The client running in the background; killed if the test leaves it running."""
    proc = subprocess.Popen(
        [JOBRUNNER, *args], env=cli_env(url, **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)  # reaps it and closes the pipes


class Lines:
    """The lines a process writes, read by a thread, so that a test can wait for each."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: queue.Queue[bytes] = queue.Queue()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            self.lines.put(line)
        self.lines.put(b"")  # the end

    def next(self, timeout: float = 20) -> bytes:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout}s") from None


def only_job(api: Api, states: set[str]) -> dict:
    """The one job of the (emptied) table, once it is in one of `states`."""

    def found() -> dict | None:
        jobs = api.http.get("/jobs").json()
        return jobs[0] if len(jobs) == 1 and jobs[0]["state"] in states else None

    return wait_for(found, timeout=20, what=f"the job to be {sorted(states)}")


@pytest.fixture
def marker() -> Iterator[str]:
    """A sleep duration that names this test's commands in `ps`, e.g. `sleep 60.123456`."""
    value = f"60.{uuid.uuid4().int % 10**6:06d}"
    yield value
    wait_for(lambda: not processes_with(f"sleep {value}"), timeout=20, what="no command left")


# --- submit -------------------------------------------------------------------------------


def test_submit_prints_the_new_jobs_id(worked_api: Api, web: str) -> None:
    result = run(web, "submit", "--", "echo", "hello  world", "$HOME")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    job = worked_api.wait(int(result.stdout))
    assert job["state"] == "succeeded"
    assert job["argv"] == ["echo", "hello  world", "$HOME"]  # no shell: no splitting, no $
    assert worked_api.output(job["id"]) == "hello  world $HOME\n"


def test_options_and_env_reach_the_job(worked_api: Api, web: str) -> None:
    result = run(
        web,
        "submit",
        "--json",
        "--queue=alpha",
        "--priority=-7",
        "--timeout=1m",
        "--retries=1",
        "--env",
        "GREETING=hi there",
        "--env",
        "FROM_CLIENT",
        "--shell",
        'echo "$GREETING/$FROM_CLIENT/$JOBRUNNER_JOB_ID"',
        FROM_CLIENT="passed on",
    )
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert (job["queue"], job["priority"], job["timeout"], job["max_retries"]) == (
        "alpha",
        -7,
        60,
        1,
    )
    assert job["argv"] is None
    assert worked_api.wait(job["id"])["state"] == "succeeded"
    assert worked_api.output(job["id"]) == f"hi there/passed on/{job['id']}\n"


def test_at_schedules_the_job(api: Api, web: str) -> None:
    result = run(web, "submit", "--json", "--at", "+1h", "--", "true")
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["state"] == "scheduled"
    run_at = dt.datetime.fromisoformat(job["run_at"])
    assert abs(run_at - dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)) < dt.timedelta(minutes=1)


def test_an_idempotency_key_submits_once(api: Api, web: str) -> None:
    first = run(web, "submit", "--idempotency-key", "deploy-42", "--at", "+1h", "--", "true")
    second = run(web, "submit", "--idempotency-key", "deploy-42", "--at", "+1h", "--", "true")
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout
    assert len(api.http.get("/jobs").json()) == 1


# --- --wait: exit codes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "note"),
    [
        (["--", "true"], 0, None),
        (["--", "sh", "-c", "exit 3"], 3, None),
        (["--timeout", "1", "--", "sleep", "30"], 124, "failed (timed out after 1s)"),
        (["--", "no-such-program-here"], 127, "failed (could not start: "),
        (["--", "sh", "-c", "kill -9 $$"], 137, "failed (killed by signal 9)"),
    ],
    ids=["success", "exit-3", "timeout", "not-started", "signal"],
)
def test_wait_exits_as_a_shell_would(
    worked_api: Api, web: str, args: list[str], code: int, note: str | None
) -> None:
    result = run(web, "submit", "--wait", *args)
    assert result.returncode == code, result.stderr
    job_id = worked_api.http.get("/jobs").json()[0]["id"]
    if note is None:
        assert result.stderr == ""  # piped: nothing but the output and the exit code
    else:
        assert result.stderr.startswith(f"jobrunner: job {job_id} {note}")
        assert len(result.stderr.splitlines()) == 1


def test_wait_prints_the_output_at_the_end(worked_api: Api, web: str) -> None:
    result = run(web, "submit", "--wait", "--shell", "echo out; echo err >&2; exit 4")
    assert (result.returncode, result.stdout, result.stderr) == (4, "out\nerr\n", "")


def test_wait_json_prints_the_finished_job(worked_api: Api, web: str) -> None:
    result = run(web, "submit", "--wait", "--json", "--", "sh", "-c", "echo hidden; exit 5")
    assert result.returncode == 5
    job = json.loads(result.stdout)
    assert (job["state"], job["exit_code"], job["last_error"]) == ("failed", 5, "exit status 5")


def test_a_job_cancelled_by_someone_else_exits_130(worked_api: Api, web: str, marker: str) -> None:
    with started(web, "submit", "--wait", "--", "sleep", marker) as proc:
        job = only_job(worked_api, {"running"})
        assert worked_api.http.post(f"/jobs/{job['id']}/cancel").status_code == 202
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert stderr.decode() == f"jobrunner: job {job['id']} cancelled\n"


def test_ctrl_c_cancels_the_job_and_exits_130(worked_api: Api, web: str, marker: str) -> None:
    with started(web, "submit", "--follow", "--shell", f"echo started; sleep {marker}") as proc:
        assert proc.stdout is not None
        assert Lines(proc.stdout).next() == b"started\n"
        job = only_job(worked_api, {"running"})
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert stderr.decode().splitlines() == [
        f"jobrunner: interrupted: cancelling job {job['id']} (Ctrl-C again to stop waiting)",
        f"jobrunner: job {job['id']} cancelled",
    ]
    assert worked_api.job(job["id"])["state"] == "cancelled"
    # and the `marker` fixture checks that the command is gone from this machine


# --- --follow -----------------------------------------------------------------------------


def test_follow_prints_output_while_the_job_runs(worked_api: Api, web: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    script = (
        'echo one; i=0; while [ ! -e "$GATE" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done;'
        " echo two; exit 3"
    )
    with started(web, "submit", "--follow", "--env", f"GATE={gate}", "--shell", script) as proc:
        assert proc.stdout is not None
        lines = Lines(proc.stdout)
        assert lines.next() == b"one\n"
        # the job waits for the gate: the line came while it was still running
        assert proc.poll() is None
        assert only_job(worked_api, {"running", "succeeded", "failed"})["state"] == "running"
        gate.touch()
        assert lines.next() == b"two\n"
        assert lines.next() == b""
        _, stderr = proc.communicate(timeout=20)
    assert (proc.returncode, stderr) == (3, b"")


def test_output_follow_prints_everything_until_the_end(worked_api: Api, web: str) -> None:
    job = worked_api.submit(command="echo a; sleep 1; printf 'b\\377\\n'")
    result = subprocess.run(
        [JOBRUNNER, "output", "--follow", str(job["id"])],
        env=cli_env(web),
        capture_output=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, b"a\nb\xff\n", b"")
    assert worked_api.job(job["id"])["state"] == "succeeded"


# --- list, show, output, cancel, retry ----------------------------------------------------


def test_list_show_and_output(worked_api: Api, web: str) -> None:
    ok = worked_api.submit(command="echo a")
    failed = worked_api.submit(command="echo b; exit 2", queue="beta")
    waiting = worked_api.submit(command="true", run_at="2099-01-01T00:00:00Z", priority=5)
    for job in (ok, failed):
        worked_api.wait(job["id"])

    table = run(web, "list")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == [
        "ID",
        "STATE",
        "QUEUE",
        "PRI",
        "ATTEMPTS",
        "EXIT",
        "CREATED",
        "COMMAND",
    ]
    assert [row.split()[:6] for row in rows] == [
        [str(waiting["id"]), "scheduled", "default", "5", "0/1", "-"],
        [str(failed["id"]), "failed", "beta", "0", "1/1", "2"],
        [str(ok["id"]), "succeeded", "default", "0", "1/1", "0"],
    ]
    assert rows[1].split("ago")[1].strip() == "echo b; exit 2"

    def listed(*args: str) -> list[int]:
        result = run(web, "list", "--json", *args)
        assert result.returncode == 0, result.stderr
        return [job["id"] for job in json.loads(result.stdout)]

    assert listed("--state", "failed") == [failed["id"]]
    assert listed("--queue", "beta") == [failed["id"]]
    assert listed("--limit", "2") == [waiting["id"], failed["id"]]
    assert listed("--limit", "1", "--all") == [waiting["id"], failed["id"], ok["id"]]
    assert listed("--limit", "1", "--all", "--order", "asc") == [
        ok["id"],
        failed["id"],
        waiting["id"],
    ]

    shown = run(web, "show", str(failed["id"]))
    assert shown.returncode == 0
    assert "state:        failed" in shown.stdout.splitlines()
    assert "last_error:   exit status 2" in shown.stdout.splitlines()
    as_json = run(web, "show", "--json", str(failed["id"]))
    assert json.loads(as_json.stdout) == worked_api.job(failed["id"])

    output = run(web, "output", str(failed["id"]))
    assert (output.returncode, output.stdout, output.stderr) == (0, "b\n", "")


def test_cancel_and_retry(worked_api: Api, web: str, marker: str) -> None:
    running = worked_api.submit(argv=["sleep", marker])
    later = worked_api.submit(command="echo again", run_at="2099-01-01T00:00:00Z")
    worked_api.wait(running["id"], {"running"})

    stopping = run(web, "cancel", str(running["id"]))
    assert stopping.returncode == 0, stopping.stderr
    assert stopping.stdout == f"job {running['id']} is being stopped (it was running)\n"
    assert worked_api.wait(running["id"])["state"] == "cancelled"

    cancelled = run(web, "cancel", str(later["id"]))
    assert cancelled.stdout == f"job {later['id']} cancelled\n"
    again = run(web, "cancel", str(later["id"]))
    assert again.returncode == 1
    assert again.stderr == f"jobrunner: job {later['id']} is already cancelled (HTTP 409)\n"

    retried = run(web, "retry", str(later["id"]))
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout == f"job {later['id']} queued again\n"
    waited = run(web, "wait", str(later["id"]))
    assert (waited.returncode, waited.stdout) == (0, "again\n")


# --- errors -------------------------------------------------------------------------------


def test_refused_input_is_one_line_and_exit_2(api: Api, web: str) -> None:
    result = run(web, "submit", "--queue", "no spaces please", "--", "true")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "jobrunner: invalid: queue must start with a letter or _, hold only letters, digits,"
        " _ and -, and be at most 64 characters (HTTP 422)\n"
    )
    assert api.http.get("/jobs").json() == []


def test_an_unknown_job_is_one_line_and_exit_1(api: Api, web: str) -> None:
    for command in ("show", "output", "cancel", "retry", "wait"):
        result = run(web, command, "987654321")
        assert (result.returncode, result.stderr) == (
            1,
            "jobrunner: no job 987654321 (HTTP 404)\n",
        ), command


def test_a_server_not_listening_is_named() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["list"], ["submit", "--wait", "--", "true"]):
        result = run(url, *args)
        assert result.returncode == 1
        assert result.stderr == f"jobrunner: cannot connect to {url}: connection refused\n"


def test_a_wrong_token_is_one_clear_line(worked_api: Api, web: str) -> None:
    result = run(web, "list", JOBRUNNER_TOKEN="jr_wrong")
    assert result.returncode == 1
    assert result.stderr == "jobrunner: invalid token (HTTP 401)\n"
