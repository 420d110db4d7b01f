"""Bearer tokens on every endpoint but the probes, against a real server."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from service.migrate import apply_migrations
from tests.conftest import MYSQL_SERVER
from tests.support import JOBRUNNER, TEST_TOKEN, Api, Process, free_port, start_web, wait_for

PROTECTED = [
    ("GET", "/jobs"),
    ("POST", "/jobs"),
    ("GET", "/jobs.json"),
    ("GET", "/jobs/1"),
    ("PUT", "/jobs/1"),
    ("PATCH", "/jobs/1.json"),
    ("DELETE", "/jobs/1"),
    ("POST", "/jobs/1/cancel"),
    ("POST", "/jobs/1/retry"),
    ("GET", "/jobs/1/output"),
    ("GET", "/openapi.json"),
    ("GET", "/no-such-path"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_every_endpoint_needs_a_token(api: Api, method: str, path: str) -> None:
    anonymous = httpx.request(method, f"{api.base_url}{path}", json={"command": "true"})
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert "token" in anonymous.json()["error"]
    wrong = httpx.request(
        method, f"{api.base_url}{path}", headers={"Authorization": "Bearer jr_nope"}
    )
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]


def test_the_probes_need_no_token(api: Api) -> None:
    assert httpx.get(f"{api.base_url}/healthz").status_code == 200
    assert httpx.get(f"{api.base_url}/readyz").status_code == 200


@pytest.mark.parametrize(
    "header", ["Basic dXNlcjpwYXNz", "Bearer", "bearer", f"Token {TEST_TOKEN}", TEST_TOKEN]
)
def test_malformed_authorization_is_refused(api: Api, header: str) -> None:
    response = httpx.get(f"{api.base_url}/jobs", headers={"Authorization": header})
    assert response.status_code == 401


def test_each_configured_token_works_and_the_scheme_is_case_insensitive(api: Api) -> None:
    for header in ("Bearer jr_another-token", f"bearer {TEST_TOKEN}"):
        response = httpx.get(f"{api.base_url}/jobs", headers={"Authorization": header})
        assert response.status_code == 200


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [JOBRUNNER, *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_tokens_managed_in_the_database(api: Api, base_env: dict[str, str], engine) -> None:  # type: ignore[no-untyped-def]
    name = f"ci-{uuid.uuid4().hex[:6]}"
    created = run(base_env, "token", "create", name)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("jr_") and len(token) > 40
    assert run(base_env, "token", "create", name).returncode == 1  # names are unique

    listed = run(base_env, "token", "list")
    assert name in listed.stdout and token not in listed.stdout
    with engine.begin() as conn:
        stored = conn.execute(sa.text("SELECT token_hash FROM api_tokens")).scalars().all()
    assert token not in stored and all(len(value) == 64 for value in stored)

    with Api(api.base_url, token=token) as client:
        wait_for(lambda: client.http.get("/jobs").status_code == 200, timeout=10, what="token")
        assert run(base_env, "token", "revoke", name).returncode == 0
        wait_for(lambda: client.http.get("/jobs").status_code == 401, timeout=10, what="revoke")
    assert run(base_env, "token", "revoke", name).returncode == 1


def test_token_scopes_from_the_cli_and_the_environment(
    api: Api, base_env: dict[str, str], log_dir: Path
) -> None:
    name = f"reader-{uuid.uuid4().hex[:6]}"
    created = run(base_env, "token", "create", name, "--scope", "read")
    assert created.returncode == 0, created.stderr
    reader = created.stdout.strip()
    listed = [line.split("\t") for line in run(base_env, "token", "list").stdout.splitlines()]
    assert [name, "read"] in [row[:2] for row in listed]
    assert run(base_env, "token", "create", "x", "--scope", "root").returncode == 2
    try:
        with Api(api.base_url, token=reader) as client:
            wait_for(lambda: client.http.get("/jobs").status_code == 200, timeout=10, what="token")
            refused = client.http.post("/jobs", json={"command": "true"})
            assert refused.status_code == 403
            assert "submit" in refused.json()["error"]
        assert api.http.get("/jobs").json() == []
    finally:
        run(base_env, "token", "revoke", name)

    env = dict(base_env, JOBRUNNER_API_TOKENS=f"{TEST_TOKEN},submit:jr_can-submit")
    web, url = start_web(env, log_dir)
    try:
        with Api(url, token="jr_can-submit") as client:
            job = client.submit(command="true", queue="nobody-serves-it")
            assert client.http.post(f"/jobs/{job['id']}/cancel").status_code == 202
            assert client.http.delete(f"/jobs/{job['id']}").status_code == 403
            assert client.job(job["id"])["state"] == "cancelled"
    finally:
        web.stop()


def test_an_unknown_scope_in_the_environment_stops_the_start(base_env: dict[str, str]) -> None:
    result = run(dict(base_env, JOBRUNNER_API_TOKENS="reed:jr_typo"), "web")
    assert result.returncode == 1
    assert "no scope" in result.stderr and result.stderr.strip().count("\n") == 0


def test_tokens_never_reach_the_logs(api: Api, log_dir: Path) -> None:
    api.http.get("/jobs")
    httpx.get(f"{api.base_url}/jobs", headers={"Authorization": "Bearer jr_wrong-secret"})
    logs = "".join(path.read_text() for path in log_dir.glob("web-*.log"))
    assert "path=/jobs" in logs and "status=401" in logs
    assert TEST_TOKEN not in logs and "jr_wrong-secret" not in logs


@pytest.fixture
def tokenless_env(base_env: dict[str, str]):  # type: ignore[no-untyped-def]
    """A fresh database with no token in it, and no JOBRUNNER_API_TOKENS."""
    name = f"jobrunner_auth_{uuid.uuid4().hex[:8]}"
    apply_migrations(f"{MYSQL_SERVER}/{name}")
    env = {k: v for k, v in base_env.items() if k != "JOBRUNNER_API_TOKENS"}
    yield dict(
        env,
        DATABASE_URL=f"{MYSQL_SERVER}/{name}",
        JOBRUNNER_STARTUP_TIMEOUT="0",
        # another database is another deployment: it may not share the suite's namespace
        JOBRUNNER_REDIS_NAMESPACE=f"{base_env['JOBRUNNER_REDIS_NAMESPACE']}-{name}",
    )
    server = sa.create_engine(MYSQL_SERVER, poolclass=sa.pool.NullPool)
    with server.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE `{name}`")
    server.dispose()


def test_the_web_refuses_to_start_without_any_token(tokenless_env: dict[str, str]) -> None:
    result = run(tokenless_env, "web")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "no API token is configured" in result.stderr
    assert "JOBRUNNER_AUTH=off" in result.stderr


def test_a_token_in_the_database_is_enough_to_start(
    tokenless_env: dict[str, str], log_dir: Path
) -> None:
    token = run(tokenless_env, "token", "create", "only").stdout.strip()
    port = free_port()
    web = Process(
        [JOBRUNNER, "web"], dict(tokenless_env, PORT=str(port)), log_dir / "web-db-token.log"
    )
    try:
        with Api(f"http://127.0.0.1:{port}", token=token) as api:
            wait_for(lambda: _answers(api), timeout=20, what="the web")
            assert api.http.get("/jobs").status_code == 200
    finally:
        web.stop()


def test_auth_off_is_explicit_and_loud(tokenless_env: dict[str, str], log_dir: Path) -> None:
    port = free_port()
    env = dict(tokenless_env, PORT=str(port), JOBRUNNER_AUTH="off")
    web = Process([JOBRUNNER, "web"], env, log_dir / "web-auth-off.log")
    try:
        with Api(f"http://127.0.0.1:{port}", token=None) as api:
            wait_for(lambda: _answers(api), timeout=20, what="the web")
            assert api.http.get("/jobs").status_code == 200
        assert "authentication is OFF" in web.output()
    finally:
        web.stop()


def test_without_authentication_browsers_of_other_sites_are_refused(
    tokenless_env: dict[str, str], log_dir: Path
) -> None:
    """The laptop case: a page the user visits must not run a command on the local server,
    by a cross-site form POST or by DNS rebinding; scripts and the server's own pages may."""
    port = free_port()
    env = dict(
        tokenless_env, PORT=str(port), JOBRUNNER_AUTH="off", JOBRUNNER_ALLOWED_HOSTS="jobs.lan"
    )
    web = Process([JOBRUNNER, "web"], env, log_dir / "web-auth-off-guard.log")
    here = f"127.0.0.1:{port}"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    body = "job%5Bcommand%5D=touch+pwned"
    try:
        with Api(f"http://{here}", token=None) as api:
            wait_for(lambda: _answers(api), timeout=20, what="the web")
            before = len(api.http.get("/jobs").json())

            # a form on another site, posted by the browser: Origin says so
            crossed = api.http.post(
                "/jobs", content=body, headers=dict(form, Origin="http://evil.example")
            )
            assert crossed.status_code == 403
            assert "cross-site" in crossed.json()["error"]
            for text_plain in ({"Content-Type": "text/plain", "Origin": "null"},):
                assert api.http.post("/jobs", content="{}", headers=text_plain).status_code == 403
            fetched = api.http.post(
                "/jobs", json={"command": "true"}, headers={"Sec-Fetch-Site": "cross-site"}
            )
            assert fetched.status_code == 403
            same_site = api.http.post(  # another port of localhost is another site's page
                "/jobs",
                content=body,
                headers=dict(form, Origin=f"http://127.0.0.1:{port + 1}"),
            )
            assert same_site.status_code == 403
            cancel = api.http.post("/jobs/1/cancel", headers={"Origin": "http://evil.example"})
            assert cancel.status_code == 403

            # DNS rebinding: the page's own name in Host, on any method
            rebound = {"Host": f"evil.example:{port}"}
            assert api.http.get("/jobs", headers=rebound).status_code == 400
            assert (
                api.http.post("/jobs", content=body, headers=dict(form, **rebound)).status_code
                == 400
            )
            assert (
                "JOBRUNNER_ALLOWED_HOSTS" in api.http.get("/jobs", headers=rebound).json()["error"]
            )
            assert api.http.get("/healthz", headers=rebound).status_code == 200  # probes

            assert len(api.http.get("/jobs").json()) == before  # nothing refused was stored

            # scripts (no Origin), the server's own pages, and listed names are served
            assert api.http.post("/jobs", content=body, headers=form).status_code == 201
            own_page = {"Origin": f"http://{here}", "Sec-Fetch-Site": "same-origin"}
            own = api.http.post("/jobs", json={"command": "true"}, headers=own_page)
            assert own.status_code == 201
            for host in (f"localhost:{port}", f"jobs.lan:{port}", f"[::1]:{port}"):
                assert api.http.get("/jobs", headers={"Host": host}).status_code == 200
            assert len(api.http.get("/jobs").json()) == before + 2
    finally:
        web.stop()


def _answers(api: Api) -> bool:
    try:
        return api.http.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False
