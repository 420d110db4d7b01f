"""The dashboard's pages and forms (/ui), in-process: every page's status, what it shows and
escapes, the session cookie, CSRF refusals, and scope refusals. The client here is a browser
(cookies, no Authorization header); the API calls carry the token themselves."""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Iterator
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from actors.context import WorkerContext
from actors.run_job import keep_queue
from service import jobs, queries, workers
from service.config import Settings
from service.db import callback_deliveries, utcnow
from service.queries import ListFilter
from service.tokens import create_token, revoke_token
from service.web.app import create_app
from service.web.dashboard.session import COOKIE
from tests.support import TEST_TOKEN, wait_for

READ_TOKEN = "jr_dashboard-reader"
SUBMIT_TOKEN = "jr_dashboard-submitter"
XSS = "<script>alert(1)</script>"
HTML = {"Accept": "text/html"}
BEARER = {"Authorization": f"Bearer {TEST_TOKEN}"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    tokens = (TEST_TOKEN, f"read:{READ_TOKEN}", f"submit:{SUBMIT_TOKEN}")
    return dataclasses.replace(settings, api_tokens=tokens, allowed_commands=())


@pytest.fixture
def browser(app_client: TestClient) -> TestClient:
    """The app as a browser sees it: cookies kept, no bearer token."""
    assert "authorization" not in app_client.headers
    return app_client


def submit(client: TestClient, **fields: Any) -> int:
    response = client.post("/jobs", json=fields, headers=BEARER)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def job(client: TestClient, job_id: int) -> dict[str, Any]:
    response = client.get(f"/jobs/{job_id}", headers=BEARER)
    assert response.status_code == 200, response.text
    return dict(response.json())


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def sign_in(client: TestClient, token: str = TEST_TOKEN) -> str:
    """Sign in as a browser does; the CSRF token of the session."""
    form = client.get("/ui/login")
    response = client.post(
        "/ui/login",
        data={"csrf_token": csrf_of(form.text), "token": token, "next": "/ui/jobs"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/ui/jobs"
    return csrf_of(client.get("/ui/jobs").text)


def cookie_attributes(response: httpx.Response) -> dict[str, Any]:
    cookie = SimpleCookie(response.headers["set-cookie"])[COOKIE]
    return {key: cookie[key] for key in ("path", "max-age", "httponly", "samesite", "secure")}


def run_all(worker: WorkerContext, queue: str = "default") -> None:
    while keep_queue(worker, queue):
        pass


# --- signing in ----------------------------------------------------------------------------


def test_a_page_sends_a_browser_without_a_session_to_sign_in(browser: TestClient) -> None:
    paths = ("/ui", "/ui/jobs?state=failed", "/ui/queues", "/ui/workers", "/ui/jobs/1")
    for path in (*paths, "/ui/schedules", "/ui/schedules/1"):
        response = browser.get(path, headers=HTML, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/ui/login?next=/ui"), path
    page = browser.get("/ui/jobs?state=failed", headers=HTML)  # followed: the sign-in form
    assert page.status_code == 200 and 'name="token"' in page.text
    assert 'value="/ui/jobs?state=failed"' in page.text  # and back there afterwards


def test_signing_in_sets_a_strict_session_cookie(browser: TestClient) -> None:
    form = browser.get("/ui/login")
    response = browser.post(
        "/ui/login",
        data={"csrf_token": csrf_of(form.text), "token": TEST_TOKEN, "next": "/ui/queues"},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == "/ui/queues"
    attributes = cookie_attributes(response)
    assert attributes["path"] == "/ui" and attributes["max-age"] == str(12 * 3600)
    assert attributes["httponly"] and attributes["samesite"] == "Strict"
    assert not attributes["secure"]  # plain HTTP here; see the HTTPS test
    assert TEST_TOKEN not in response.headers["set-cookie"]
    assert browser.get("/ui/jobs", headers=HTML).status_code == 200


def test_over_https_the_cookie_is_secure(browser: TestClient) -> None:
    response = browser.get("https://testserver/ui/login")
    assert cookie_attributes(response)["secure"]


def test_a_wrong_token_is_refused_without_saying_why(browser: TestClient) -> None:
    answers = []
    for token in ("jr_nonsense", TEST_TOKEN + "x", "x" * 300, ""):
        form = browser.get("/ui/login")
        response = browser.post(
            "/ui/login", data={"csrf_token": csrf_of(form.text), "token": token}
        )
        assert response.status_code == 401, token
        answers.append(re.findall(r'role="alert">([^<]*)<', response.text))
    assert answers == [["That token is not valid."]] * 4
    assert browser.get("/ui/jobs", headers=HTML, follow_redirects=False).status_code == 303


def test_signing_in_needs_the_forms_csrf_token(browser: TestClient) -> None:
    browser.get("/ui/login")
    response = browser.post("/ui/login", data={"token": TEST_TOKEN}, follow_redirects=False)
    assert response.status_code == 403
    assert browser.get("/ui/jobs", headers=HTML, follow_redirects=False).status_code == 303


def test_after_signing_in_only_pages_of_this_dashboard(browser: TestClient) -> None:
    for target in ("//evil.example/x", "https://evil.example/", "/jobs", "/ui/\\evil"):
        form = browser.get("/ui/login")
        response = browser.post(
            "/ui/login",
            data={"csrf_token": csrf_of(form.text), "token": TEST_TOKEN, "next": target},
            follow_redirects=False,
        )
        assert response.headers["location"] == "/ui/jobs", target


def test_signing_out_ends_the_session(browser: TestClient) -> None:
    csrf = sign_in(browser)
    refused = browser.post("/ui/logout", data={}, follow_redirects=False)
    assert refused.status_code == 403  # no CSRF token: still signed in
    assert browser.get("/ui/jobs", headers=HTML, follow_redirects=False).status_code == 200
    response = browser.post("/ui/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/ui/login"
    assert browser.get("/ui/jobs", headers=HTML, follow_redirects=False).status_code == 303


def test_a_tampered_or_foreign_cookie_is_no_session(browser: TestClient) -> None:
    sign_in(browser)
    value = browser.cookies[COOKIE]
    browser.cookies.clear()
    browser.cookies.set(COOKIE, value[:-2] + ("AA" if value[-2:] != "AA" else "BB"), path="/ui")
    assert browser.get("/ui/jobs", headers=HTML, follow_redirects=False).status_code == 303


def test_a_revoked_token_ends_its_sessions(
    browser: TestClient, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("service.web.auth.TOKEN_REFRESH_S", 0.0)  # read the tokens every time
    token = create_token(engine, "dashboard-user")
    sign_in(browser, token)
    assert browser.get("/ui/jobs", headers=HTML, follow_redirects=False).status_code == 200
    revoke_token(engine, "dashboard-user")
    wait_for(
        lambda: browser.get("/ui/jobs", headers=HTML, follow_redirects=False).status_code == 303,
        what="the session to end",
    )


# --- the pages -----------------------------------------------------------------------------


def test_pages_send_security_headers(browser: TestClient) -> None:
    sign_in(browser)
    job_id = submit(browser, command="true")
    pages = ("/ui/login", "/ui/jobs", f"/ui/jobs/{job_id}", "/ui/jobs/new", "/ui/queues")
    for path in (*pages, "/ui/schedules"):
        response = browser.get(path)
        assert response.status_code == 200, path
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
        assert "<script>" not in response.text  # no inline script: only <script src=...>
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", response.text), path


def test_static_files_are_served_with_cache_headers(browser: TestClient) -> None:
    page = browser.get("/ui/login").text
    browser.cookies.clear()
    for url in re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', page):
        response = browser.get(url)
        assert response.status_code == 200, url
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert "set-cookie" not in response.headers
        again = browser.get(url, headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304
    unversioned = browser.get("/ui/static/app.js")
    assert unversioned.headers["cache-control"] == "public, max-age=300"
    assert unversioned.headers["content-type"].startswith("text/javascript")
    assert browser.get("/ui/static/nothing.js").status_code == 404


def test_every_value_is_escaped(browser: TestClient, worker: WorkerContext) -> None:
    sign_in(browser)
    job_id = submit(browser, command=f"echo '{XSS}'; echo '{XSS}' >&2; exit 4", queue="q1")
    run_all(worker, "q1")
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    for path in (
        "/ui/jobs",
        f"/ui/jobs?q={XSS}",
        f"/ui/jobs/{job_id}",
        f"/ui/jobs/new?from={job_id}",
        f"/ui/jobs?queue={XSS}",
    ):
        response = browser.get(path)
        assert response.status_code == 200, path
        assert XSS not in response.text, path
    page = browser.get(f"/ui/jobs/{job_id}").text
    assert page.count(escaped) >= 3  # the command, and the output (stdout and stderr)
    assert escaped in browser.get("/ui/jobs").text


def test_the_list_is_newest_first_with_its_filters_in_the_url(
    browser: TestClient, worker: WorkerContext
) -> None:
    sign_in(browser)
    ids = [submit(browser, command=f"echo job-{n}", queue="alpha") for n in range(3)]
    failing = submit(browser, command="exit 2", queue="beta")
    run_all(worker, "alpha")
    run_all(worker, "beta")
    other = submit(browser, command="echo waiting", queue="alpha")
    page = browser.get("/ui/jobs").text
    shown = [int(n) for n in re.findall(r'<td><a href="/ui/jobs/(\d+)">', page)]
    assert shown == [other, failing, *reversed(ids)]
    counts = dict(re.findall(r'class="state-(\w+)[^"]*">\w+ <b>(\d+)</b>', page))
    assert counts["succeeded"] == "3" and counts["failed"] == "1" and counts["queued"] == "1"

    def shown_on(url: str) -> list[int]:
        text = browser.get(url).text
        return [int(n) for n in re.findall(r'<td><a href="/ui/jobs/(\d+)">', text)]

    assert shown_on("/ui/jobs?state=failed") == [failing]
    assert shown_on("/ui/jobs?queue=alpha&state=succeeded") == list(reversed(ids))
    assert shown_on("/ui/jobs?q=job-1") == [ids[1]]
    assert shown_on("/ui/jobs?q=JOB-") == list(reversed(ids))  # case does not matter
    assert shown_on("/ui/jobs?q=%25") == []  # a search has no wildcards
    assert shown_on("/ui/jobs?order=asc&limit=2") == ids[:2]
    # pages: `after`, in the "older" link, keeping the view
    first = browser.get("/ui/jobs?queue=alpha&limit=2").text
    older = re.search(r'rel="next" href="([^"]+)"', first)
    assert older is not None
    link = older.group(1).replace("&amp;", "&")
    assert "queue=alpha" in link and "limit=2" in link
    assert shown_on(link) == [ids[1], ids[0]]
    # the rows alone, for the page's script to refresh them
    rows = browser.get("/ui/jobs?state=failed&rows=1")
    assert rows.status_code == 200 and "<html" not in rows.text and f"#{failing}" in rows.text
    # a bad filter is dropped, and said so
    bad = browser.get("/ui/jobs?state=nonsense&limit=x")
    assert bad.status_code == 200 and "Ignored: no state" in bad.text


def test_the_id_box_opens_the_job(browser: TestClient) -> None:
    sign_in(browser)
    job_id = submit(browser, command="true")
    response = browser.get(f"/ui/jobs?id={job_id}", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/ui/jobs/{job_id}"
    assert browser.get("/ui/jobs/999999", headers=HTML).status_code == 404
    assert browser.get("/ui/jobs/999999").json() == {"error": "no job 999999"}


def test_a_failed_jobs_page_puts_the_reason_first(
    browser: TestClient, worker: WorkerContext
) -> None:
    sign_in(browser)
    job_id = submit(browser, command="echo almost; echo broken >&2; exit 3")
    run_all(worker)
    page = browser.get(f"/ui/jobs/{job_id}").text
    banner = page.index('class="banner bad"')
    assert page.index("exit status 3") > banner
    assert banner < page.index('id="output"') < page.index("<h2>Fields</h2>")
    assert "almost\nbroken\n" in page
    assert 'id="output" tabindex="0"\n' in page or "data-follow" not in page  # final: no live
    assert f'action="/ui/jobs/{job_id}/retry"' in page
    assert f'action="/ui/jobs/{job_id}/cancel"' not in page
    assert f'href="/ui/jobs/new?from={job_id}"' in page
    for name in ("max_retries", "locked_by", "finished_at", "end_reason", "exit_signal"):
        assert f"<th>{name}</th>" in page, name
    download = browser.get(f"/ui/jobs/{job_id}/output")
    assert download.status_code == 200 and download.text == "almost\nbroken\n"
    assert download.headers["content-disposition"] == f'attachment; filename="job-{job_id}.log"'


def test_a_waiting_jobs_page_follows_its_output(browser: TestClient) -> None:
    sign_in(browser)
    job_id = submit(browser, command="true", queue="nobody-serves-this")
    page = browser.get(f"/ui/jobs/{job_id}").text
    assert f'data-follow="/ui/jobs/{job_id}/output?follow=1&amp;offset=0"' in page
    assert f'action="/ui/jobs/{job_id}/cancel"' in page and "/retry" not in page
    assert '<meta http-equiv="refresh"' in page  # inside <noscript>: without JavaScript


def test_the_live_output_stream_works_with_the_session(
    browser: TestClient, worker: WorkerContext
) -> None:
    sign_in(browser)
    job_id = submit(browser, command="echo streamed")
    run_all(worker)
    stream = browser.get(
        f"/ui/jobs/{job_id}/output?follow=1", headers={"Accept": "text/event-stream"}
    )
    assert stream.status_code == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert 'event: output\ndata: "streamed\\n"' in stream.text
    assert "event: end" in stream.text and '"state": "succeeded"' in stream.text
    resumed = browser.get(
        f"/ui/jobs/{job_id}/output?follow=1",
        headers={"Accept": "text/event-stream", "Last-Event-ID": "3"},
    )
    assert 'data: "eamed\\n"' in resumed.text


# --- the forms -----------------------------------------------------------------------------


def test_cancel_and_retry_need_the_csrf_token(browser: TestClient) -> None:
    csrf = sign_in(browser)
    job_id = submit(browser, command="true", queue="nobody-serves-this")
    for data in ({}, {"csrf_token": "forged"}, {"csrf_token": csrf + "x"}):
        refused = browser.post(f"/ui/jobs/{job_id}/cancel", data=data, headers=HTML)
        assert refused.status_code == 403 and "reload the page" in refused.text
    cross_site = browser.post(
        f"/ui/jobs/{job_id}/cancel",
        data={"csrf_token": csrf},
        headers={"Origin": "http://evil.example"},
    )
    assert cross_site.status_code == 403 and "Origin" in cross_site.json()["error"]
    fetched = browser.post(
        f"/ui/jobs/{job_id}/cancel",
        data={"csrf_token": csrf},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert fetched.status_code == 403
    assert job(browser, job_id)["state"] == "queued"
    done = browser.post(
        f"/ui/jobs/{job_id}/cancel",
        data={"csrf_token": csrf},
        headers={"Origin": "http://testserver"},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == f"/ui/jobs/{job_id}"
    assert job(browser, job_id)["state"] == "cancelled"
    assert browser.post(f"/ui/jobs/{job_id}/retry", data={}).status_code == 403
    assert job(browser, job_id)["state"] == "cancelled"
    browser.post(f"/ui/jobs/{job_id}/retry", data={"csrf_token": csrf})
    assert job(browser, job_id)["state"] == "queued"
    again = browser.post(f"/ui/jobs/{job_id}/retry", data={"csrf_token": csrf}, headers=HTML)
    assert again.status_code == 409  # only a failed or cancelled job may be retried


def test_a_script_with_a_bearer_token_needs_no_csrf_token(browser: TestClient) -> None:
    job_id = submit(browser, command="true", queue="nobody-serves-this")
    response = browser.post(f"/ui/jobs/{job_id}/cancel", headers=BEARER, follow_redirects=False)
    assert response.status_code == 303
    assert job(browser, job_id)["state"] == "cancelled"
    assert "set-cookie" not in response.headers


def test_submitting_a_job_through_the_form(browser: TestClient, worker: WorkerContext) -> None:
    csrf = sign_in(browser)
    form = browser.get("/ui/jobs/new")
    assert form.status_code == 200 and 'name="command"' in form.text
    response = browser.post(
        "/ui/jobs",
        data={
            "csrf_token": csrf,
            "command": 'echo "$GREETING from the form"',
            "queue": "formq",
            "priority": "5",
            "timeout": "60",
            "max_retries": "1",
            "env": "GREETING=hello\r\n",
        },
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    job_id = int(response.headers["location"].rsplit("/", 1)[1])
    created = job(browser, job_id)
    assert (created["queue"], created["priority"], created["timeout"]) == ("formq", 5, 60)
    assert created["max_retries"] == 1 and "env" not in created
    run_all(worker, "formq")
    assert job(browser, job_id)["state"] == "succeeded"
    assert "hello from the form" in browser.get(f"/ui/jobs/{job_id}").text
    # argv, one item per line; run again from a job fills the form in
    argv = browser.post(
        "/ui/jobs",
        data={"csrf_token": csrf, "argv": "printf\n%s-%s\na b\n", "queue": "formq"},
        follow_redirects=False,
    )
    argv_id = int(argv.headers["location"].rsplit("/", 1)[1])
    assert job(browser, argv_id)["argv"] == ["printf", "%s-%s", "a b"]
    again = browser.get(f"/ui/jobs/new?from={argv_id}").text
    assert ">printf\n%s-%s\na b</textarea>" in again and 'value="formq"' in again


def test_the_forms_errors_show_beside_their_fields(browser: TestClient) -> None:
    csrf = sign_in(browser)
    response = browser.post(
        "/ui/jobs",
        data={
            "csrf_token": csrf,
            "command": XSS,
            "argv": "ls",
            "priority": "soon",
            "timeout": "0",
            "run_at": "tomorrow",
            "env": "NOEQUALS",
        },
    )
    assert response.status_code == 422
    page = response.text
    assert XSS not in page and "&lt;script&gt;alert(1)&lt;/script&gt;</textarea>" in page
    errors = dict(re.findall(r'<p class="error" id="(\w+)-error">([^<]*)</p>', page))
    assert errors == {"env": "env line 1 is not NAME=value"}  # the form's own check comes first
    response = browser.post(
        "/ui/jobs",
        data={"csrf_token": csrf, "priority": "soon", "timeout": "0", "run_at": "tomorrow"},
    )
    errors = dict(re.findall(r'<p class="error" id="(\w+)-error">([^<]*)</p>', response.text))
    assert set(errors) == {"priority", "timeout", "run_at"}, errors
    assert errors["priority"] == "priority must be an integer"
    blank = browser.post("/ui/jobs", data={"csrf_token": csrf, "command": "  "})
    assert blank.status_code == 422 and "command can&#39;t be blank" in blank.text
    both = browser.post("/ui/jobs", data={"csrf_token": csrf, "command": "ls", "argv": "ls"})
    assert 'id="argv-error">argv cannot be given together with command' in both.text
    refused = browser.post("/ui/jobs", data={"command": "true"})
    assert refused.status_code == 403


@pytest.fixture
def policed(settings: Settings) -> Settings:
    return dataclasses.replace(settings, allowed_commands=("bin/*",))


def test_a_command_the_policy_refuses_shows_why(policed: Settings, worker: WorkerContext) -> None:
    with TestClient(create_app(policed, dispatcher=worker.dispatcher)) as browser:
        csrf = sign_in(browser)
        response = browser.post("/ui/jobs", data={"csrf_token": csrf, "command": "rm -rf /"})
        assert response.status_code == 403
        assert 'id="command-error">command' in response.text and "not allowed" in response.text


# --- scopes --------------------------------------------------------------------------------


def test_a_read_session_sees_no_buttons_and_may_press_none(browser: TestClient) -> None:
    job_id = submit(browser, command="true", queue="nobody-serves-this")
    csrf = sign_in(browser, READ_TOKEN)
    page = browser.get(f"/ui/jobs/{job_id}").text
    assert "/cancel" not in page and "Run again" not in page and "/ui/jobs/new" not in page
    assert 'class="scope"' in page and ">read<" in page
    for path in (f"/ui/jobs/{job_id}/cancel", f"/ui/jobs/{job_id}/retry", "/ui/jobs"):
        response = browser.post(path, data={"csrf_token": csrf, "command": "true"}, headers=HTML)
        assert response.status_code == 403, path
        assert "needs a token of scope submit" in response.text
    assert browser.get("/ui/jobs/new", headers=HTML).status_code == 403
    assert job(browser, job_id)["state"] == "queued"
    assert browser.get("/ui/queues").status_code == 200


def test_a_submit_session_may_cancel_but_not_delete(browser: TestClient) -> None:
    job_id = submit(browser, command="true", queue="nobody-serves-this")
    csrf = sign_in(browser, SUBMIT_TOKEN)
    page = browser.get(f"/ui/jobs/{job_id}").text
    assert "/cancel" in page and "/delete" not in page
    refused = browser.post(f"/ui/jobs/{job_id}/delete", data={"csrf_token": csrf}, headers=HTML)
    assert refused.status_code == 403 and "needs a token of scope admin" in refused.text
    browser.post(f"/ui/jobs/{job_id}/cancel", data={"csrf_token": csrf})
    assert job(browser, job_id)["state"] == "cancelled"


def test_an_admin_session_may_delete(browser: TestClient) -> None:
    job_id = submit(browser, command="true", queue="nobody-serves-this")
    csrf = sign_in(browser)
    assert f'action="/ui/jobs/{job_id}/delete"' in browser.get(f"/ui/jobs/{job_id}").text
    assert browser.post(f"/ui/jobs/{job_id}/delete", data={}).status_code == 403
    assert job(browser, job_id)["state"] == "queued"
    done = browser.post(
        f"/ui/jobs/{job_id}/delete", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert done.status_code == 303 and done.headers["location"] == "/ui/jobs"
    assert browser.get(f"/jobs/{job_id}", headers=BEARER).status_code == 404


def test_queues_and_workers_pages(browser: TestClient, engine: sa.Engine) -> None:
    sign_in(browser)
    assert "No worker is alive" in browser.get("/ui/workers").text
    assert "No queue has jobs" in browser.get("/ui/queues").text
    job_id = submit(browser, command="true", queue="reports")
    page = browser.get("/ui/queues").text
    row = re.search(r'href="/ui/jobs\?queue=reports">reports</a>(.*?)</tr>', page, re.S)
    assert row, page
    cells = re.findall(r'<td class="num">(?:<a [^>]*>)?([^<]*)', row.group(1))
    assert cells[:2] == ["1", "0"]  # waiting, running
    workers.register(engine, workers.this_process("testhost:1", ["reports", "ci"]))
    assert jobs.claim_next(engine, "reports", "testhost:1") is not None
    listed = browser.get("/ui/workers").text
    assert "<code>testhost:1</code>" in listed and "reports, ci" in listed
    assert f'<a href="/ui/jobs/{job_id}">#{job_id}</a>' in listed  # what it runs


# --- without authentication ----------------------------------------------------------------


@pytest.fixture
def open_browser(settings: Settings, worker: WorkerContext) -> Iterator[TestClient]:
    unauthenticated = dataclasses.replace(settings, auth_enabled=False, api_tokens=())
    app = create_app(unauthenticated, dispatcher=worker.dispatcher)
    with TestClient(app, base_url="http://localhost") as client:  # a name it answers to
        yield client


def test_without_authentication_no_sign_in_but_forms_keep_their_guards(
    open_browser: TestClient,
) -> None:
    page = open_browser.get("/ui/jobs")
    assert page.status_code == 200 and "authentication off" in page.text
    assert "Authentication is off" in open_browser.get("/ui/login").text
    csrf = csrf_of(open_browser.get("/ui/jobs/new").text)  # the anonymous session's
    job_id = submit(open_browser, command="true", queue="nobody-serves-this")
    assert open_browser.post(f"/ui/jobs/{job_id}/cancel", data={}).status_code == 403
    cross = open_browser.post(
        f"/ui/jobs/{job_id}/cancel",
        data={"csrf_token": csrf},
        headers={"Origin": "http://evil.example"},
    )
    assert cross.status_code == 403
    rebinding = open_browser.get("/ui/jobs", headers={"Host": "evil.example"})
    assert rebinding.status_code == 400
    assert job(open_browser, job_id)["state"] == "queued"
    open_browser.post(f"/ui/jobs/{job_id}/cancel", data={"csrf_token": csrf})
    assert job(open_browser, job_id)["state"] == "cancelled"


def test_a_search_reads_a_bounded_window_then_goes_on(
    browser: TestClient, engine: sa.Engine
) -> None:
    ids = [submit(browser, command=f"echo {'needle' if n == 1 else 'hay'} {n}") for n in range(7)]
    newest_first = ListFilter(limit=50, descending=True)
    with engine.connect() as conn:
        first = queries.search_jobs(conn, newest_first, "needle", window=3)
        assert first.jobs == [] and first.next_after == first.searched_to == ids[4]
        then = dataclasses.replace(newest_first, after=first.next_after)
        second = queries.search_jobs(conn, then, "needle", window=3)
        assert [job.id for job in second.jobs] == [ids[1]] and second.next_after == ids[1]
        last = queries.search_jobs(conn, dataclasses.replace(then, after=ids[1]), "needle", 3)
        assert last.jobs == [] and last.next_after is None
    sign_in(browser)
    assert "down to #" in browser.get("/ui/jobs?q=needle").text


def test_the_list_never_reads_output(browser: TestClient, worker: WorkerContext) -> None:
    sign_in(browser)
    job_id = submit(browser, command="echo some output")
    run_all(worker)
    for url in ("/ui/jobs", "/ui/jobs?state=succeeded", "/ui/jobs?q=some", "/ui/jobs?rows=1"):
        reads = [s for s in statements_of(browser, url) if "FROM jobs" in s]
        assert reads, url
        assert not [s for s in reads if re.search(r"\bjobs\.output\b(?!_)", s)], url
    page = statements_of(browser, f"/ui/jobs/{job_id}")  # a job's page does read it
    assert [s for s in page if re.search(r"\bjobs\.output\b(?!_)", s)]


def statements_of(client: TestClient, url: str) -> list[str]:
    """The SQL that answering GET `url` sent."""
    found: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        found.append(statement)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    try:
        assert client.get(url).status_code == 200, url
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)
    return found


# --- schedules, concurrency, callbacks -----------------------------------------------------


def new_schedule(client: TestClient, **fields: Any) -> dict[str, Any]:
    body = {"name": "nightly", "job": {"command": "true", "queue": "sched"}} | fields
    if "cron" not in body:
        body.setdefault("every", 3600)
    response = client.post("/schedules", json=body, headers=BEARER)
    assert response.status_code == 201, response.text
    return dict(response.json())


def schedule_of(client: TestClient, schedule_id: int) -> dict[str, Any]:
    response = client.get(f"/schedules/{schedule_id}", headers=BEARER)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_the_schedules_pages(browser: TestClient) -> None:
    sign_in(browser)
    assert "No schedules" in browser.get("/ui/schedules").text
    hourly = new_schedule(browser, name=XSS, job={"command": f"echo '{XSS}'", "queue": "sched"})
    cron = new_schedule(browser, name="reports", cron="15 3 * * 1", timezone="Europe/Berlin")
    listed = browser.get("/ui/schedules")
    assert listed.status_code == 200 and XSS not in listed.text
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert f'<a href="/ui/schedules/{hourly["id"]}">{escaped}</a>' in listed.text
    assert "<code>15 3 * * 1</code>" in listed.text and "Europe/Berlin" in listed.text
    assert "every 3600s" in listed.text and "never" in listed.text
    assert '<a href="/ui/schedules">Schedules</a>' in listed.text  # in the navigation
    triggered = browser.post(f"/schedules/{cron['id']}/trigger", headers=BEARER).json()
    listed = browser.get("/ui/schedules").text
    assert f'<a href="/ui/jobs/{triggered["id"]}">#{triggered["id"]}</a>' in listed  # last run
    page = browser.get(f"/ui/schedules/{cron['id']}")
    assert page.status_code == 200
    assert f'<a href="/ui/jobs/{triggered["id"]}">#{triggered["id"]}</a>' in page.text
    assert f'href="/ui/jobs?schedule_id={cron["id"]}"' in page.text
    for action in ("trigger", "disable"):  # an admin session's buttons
        assert f'action="/ui/schedules/{cron["id"]}/{action}"' in page.text
    assert "/enable" not in page.text
    other = browser.get(f"/ui/schedules/{hourly['id']}")
    assert other.status_code == 200 and XSS not in other.text and escaped in other.text
    assert browser.get("/ui/schedules/999999", headers=HTML).status_code == 404
    # a job it made links back to it
    job_page = browser.get(f"/ui/jobs/{triggered['id']}").text
    assert f'<a href="/ui/schedules/{cron["id"]}">schedule {cron["id"]}</a>' in job_page


def test_the_schedule_buttons_need_the_csrf_token(browser: TestClient) -> None:
    csrf = sign_in(browser)
    schedule = new_schedule(browser)
    path = f"/ui/schedules/{schedule['id']}"
    for action in ("disable", "enable", "trigger"):
        for data in ({}, {"csrf_token": "forged"}):
            refused = browser.post(f"{path}/{action}", data=data, headers=HTML)
            assert refused.status_code == 403 and "reload the page" in refused.text, action
        cross_site = browser.post(
            f"{path}/{action}", data={"csrf_token": csrf}, headers={"Origin": "http://evil.example"}
        )
        assert cross_site.status_code == 403, action
    assert schedule_of(browser, schedule["id"])["enabled"] is True
    assert browser.get(f"/jobs?schedule_id={schedule['id']}", headers=BEARER).json() == []

    done = browser.post(f"{path}/disable", data={"csrf_token": csrf}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == path
    shown = schedule_of(browser, schedule["id"])
    assert shown["enabled"] is False and shown["next_run_at"] is None
    page = browser.get(path).text
    assert f'action="{path}/enable"' in page and f'action="{path}/disable"' not in page
    browser.post(f"{path}/enable", data={"csrf_token": csrf})
    assert schedule_of(browser, schedule["id"])["next_run_at"] is not None

    fired = browser.post(f"{path}/trigger", data={"csrf_token": csrf}, follow_redirects=False)
    assert fired.status_code == 303 and fired.headers["location"] == path
    made = browser.get(f"/jobs?schedule_id={schedule['id']}", headers=BEARER).json()
    assert [job["schedule_id"] for job in made] == [schedule["id"]]
    assert f'<a href="/ui/jobs/{made[0]["id"]}">#{made[0]["id"]}</a>' in browser.get(path).text


@pytest.mark.parametrize("token", [READ_TOKEN, SUBMIT_TOKEN])
def test_only_an_admin_session_may_change_a_schedule(browser: TestClient, token: str) -> None:
    schedule = new_schedule(browser)
    csrf = sign_in(browser, token)
    path = f"/ui/schedules/{schedule['id']}"
    page = browser.get(path)
    assert page.status_code == 200 and "nightly" in page.text  # it may read it
    assert (
        "/trigger" not in page.text
        and "/disable" not in page.text
        and "<button" not in (page.text.split("<main>", 1)[1])
    )
    assert browser.get("/ui/schedules").status_code == 200
    for action in ("disable", "enable", "trigger"):
        refused = browser.post(f"{path}/{action}", data={"csrf_token": csrf}, headers=HTML)
        assert refused.status_code == 403, action
        assert "needs a token of scope admin" in refused.text
    assert schedule_of(browser, schedule["id"])["enabled"] is True
    assert browser.get(f"/jobs?schedule_id={schedule['id']}", headers=BEARER).json() == []


def test_the_list_filters_by_schedule_and_concurrency_key(
    browser: TestClient, worker: WorkerContext
) -> None:
    sign_in(browser)
    schedule = new_schedule(browser)
    made = browser.post(f"/schedules/{schedule['id']}/trigger", headers=BEARER).json()["id"]
    keyed = [submit(browser, command="true", concurrency_key="deploy-web") for _ in range(2)]
    plain = submit(browser, command="true")

    def shown_on(url: str) -> list[int]:
        text = browser.get(url).text
        return [int(n) for n in re.findall(r'<td><a href="/ui/jobs/(\d+)">', text)]

    assert shown_on("/ui/jobs") == [plain, *reversed(keyed), made]
    assert shown_on(f"/ui/jobs?schedule_id={schedule['id']}") == [made]
    assert shown_on("/ui/jobs?concurrency_key=deploy-web") == list(reversed(keyed))
    assert shown_on("/ui/jobs?concurrency_key=deploy-web&q=tru") == list(reversed(keyed))
    assert shown_on(f"/ui/jobs?schedule_id={schedule['id']}&q=true") == [made]
    page = browser.get("/ui/jobs?concurrency_key=deploy-web").text
    counts = dict(re.findall(r'class="state-(\w+)[^"]*">\w+ <b>(\d+)</b>', page))
    assert counts["queued"] == "2"  # the counts are the view's
    assert 'name="concurrency_key" value="deploy-web"' in page
    links = re.findall(r'href="(/ui/jobs\?[^"]+)"', page)
    assert links and all("concurrency_key=deploy-web" in link for link in links[1:])  # kept
    bad = browser.get("/ui/jobs?schedule_id=x&concurrency_key=a%20b")
    assert bad.status_code == 200 and "Ignored: schedule_id" in bad.text
    assert "not a valid concurrency key" in bad.text
    job_page = browser.get(f"/ui/jobs/{keyed[0]}").text
    assert '<a href="/ui/jobs?concurrency_key=deploy-web">deploy-web</a>' in job_page
    assert re.search(r"<th>concurrency_limit</th><td>\s*1\s*</td>", job_page)


@pytest.fixture
def capped(settings: Settings) -> Settings:
    return dataclasses.replace(settings, queue_concurrency=(("reports", 2), ("idle", 3)))


def test_the_queues_page_shows_caps_and_keys_in_use(
    capped: Settings, worker: WorkerContext, engine: sa.Engine
) -> None:
    with TestClient(create_app(capped, dispatcher=worker.dispatcher)) as browser:
        sign_in(browser)
        submit(browser, command="true", queue="reports", concurrency_key="nightly-report")
        submit(browser, command="true", queue="reports")
        submit(browser, command="true", queue="other")
        assert jobs.claim_next(engine, "reports", "testhost:1") is not None
        page = browser.get("/ui/queues").text

        def concurrency_of(queue: str) -> str:
            row = re.search(rf'href="/ui/jobs\?queue={queue}">{queue}</a>(.*?)</tr>', page, re.S)
            assert row, page
            cell = re.search(r'<td class="num concurrency">(.*?)</td>', row.group(1), re.S)
            assert cell, row.group(1)
            return re.sub(r"<[^>]+>", "", cell.group(1))

        assert concurrency_of("reports") == "1 / 2"
        assert concurrency_of("idle") == "0 / 3"  # a cap with no jobs is still shown
        assert concurrency_of("other") == "—"
        assert '<a href="/ui/jobs?concurrency_key=nightly-report">nightly-report</a>' in page


@pytest.fixture
def hooked(settings: Settings, worker: WorkerContext) -> Iterator[TestClient]:
    """Callbacks on (a secret to sign with), to hooks.example."""
    secret = "whsec_" + base64.b64encode(b"dashboard-test-secret-0123456789").decode()
    on = dataclasses.replace(
        settings, callback_secrets=(secret,), callback_allow=("hooks.example",)
    )
    with TestClient(create_app(on, dispatcher=worker.dispatcher)) as client:
        yield client


def test_a_jobs_page_shows_its_callback_and_deliveries(
    hooked: TestClient, engine: sa.Engine
) -> None:
    browser = hooked
    sign_in(browser)
    job_id = submit(browser, command="true", callback_url="https://hooks.example/done")
    page = browser.get(f"/ui/jobs/{job_id}").text
    assert "<code>https://hooks.example/done</code>" in page and "Callback deliveries" not in page
    with engine.begin() as conn:
        conn.execute(
            callback_deliveries.insert(),
            [
                {
                    "event_id": "msg_1",
                    "job_id": job_id,
                    "url": f"https://hooks.example/{XSS}",
                    "attempt": 1,
                    "at": utcnow(),
                    "status_code": 503,
                    "error": None,
                    "next_attempt_at": utcnow(),
                },
                {
                    "event_id": "msg_1",
                    "job_id": job_id,
                    "url": "https://hooks.example/done",
                    "attempt": 2,
                    "at": utcnow(),
                    "status_code": None,
                    "error": "connection refused",
                    "next_attempt_at": None,
                },
            ],
        )
    page = browser.get(f"/ui/jobs/{job_id}").text
    assert "Callback deliveries" in page and XSS not in page
    assert "HTTP 503" in page and "connection refused" in page
    assert page.index("HTTP 503") < page.index("connection refused")  # oldest first
    assert len(browser.get(f"/jobs/{job_id}/deliveries", headers=BEARER).json()) == 2
