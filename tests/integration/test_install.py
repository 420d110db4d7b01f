"""`pip install .` (not editable, without the mysql extra) into a fresh virtualenv, then
`jobrunner dev` in an empty folder: the first try the README promises, on this machine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Api, Process, start_dev, stop_all

ROOT = Path(__file__).resolve().parents[2]
TRY_COMMAND = "echo hello; sleep 1; echo world"


def copy_sources(dest: Path) -> Path:
    """The project's files (tracked, or new and not ignored) in `dest`: pip builds in the
    folder it installs from, and must leave this work tree alone."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@pytest.fixture
def dev(log_dir: Path) -> Iterator[list[Process]]:
    processes: list[Process] = []
    yield processes
    stop_all(processes)


@pytest.mark.timeout(400)
def test_pip_install_then_jobrunner_dev_in_an_empty_folder(
    dev_env: dict[str, str], log_dir: Path, tmp_path: Path, dev: list[Process]
) -> None:
    src = copy_sources(tmp_path / "src")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in dev_env.items() if k not in ("JOB_HOME", "JOBRUNNER_API_TOKENS")}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    jobrunner = str(venv / "bin" / "jobrunner")
    # the code comes from the virtualenv, and MySQL's driver is not there
    probe = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.util as u, service; print(service.__file__, u.find_spec('MySQLdb'))",
        ],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    where, driver = probe.stdout.split()
    assert where.startswith(f"{venv}/") and driver == "None"
    # a MySQL database (the default DATABASE_URL) without its driver: one line saying what to do
    web = subprocess.run(
        [jobrunner, "web"], cwd=empty, env=env, capture_output=True, text=True, timeout=60
    )
    assert web.returncode == 1 and len(web.stderr.strip().splitlines()) == 1, web
    assert "pip install 'http-job-runner[mysql]'" in web.stderr

    proc, url = start_dev(env, log_dir, None, jobrunner=jobrunner, cwd=empty)
    dev.append(proc)
    assert (empty / "jobrunner-dev.sqlite3").exists()
    token = (empty / ".jobrunner" / "dev-token").read_text().strip()
    assert f"API token (also in {empty}/.jobrunner/dev-token): {token}" in proc.output()
    assert f"dashboard: {url}/ui  (sign in with the API token below)" in proc.output()
    with Api(url, token=None) as browser:  # the dashboard's templates and static files shipped
        sign_in = browser.http.get("/ui/login")
        assert sign_in.status_code == 200 and 'name="token"' in sign_in.text
        script = re.search(r'src="(/ui/static/app\.js\?v=\w+)"', sign_in.text)
        assert script and browser.http.get(script.group(1)).status_code == 200
    with Api(url, token=token) as api:
        response = api.http.post("/jobs", data={"job[command]": TRY_COMMAND})
        assert response.status_code == 201, response.text
        job = api.wait(response.json()["id"])
        assert (job["state"], job["exit_code"]) == ("succeeded", 0)
        assert api.output(job["id"]) == "hello\nworld\n"
        pwd = api.wait(api.submit(command="pwd")["id"])
        assert api.output(pwd["id"]) == f"{os.path.realpath(empty)}\n"
