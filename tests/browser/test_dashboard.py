"""The dashboard in a real browser: sign in, find a job, open it, watch a running job's output
grow without a reload, cancel it, submit a job through the form and see it succeed, trigger a
schedule and see its job appear; the jobs list refreshes itself. The screenshots of the README
are taken here."""

from __future__ import annotations

import uuid
from pathlib import Path

from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import UI_DEADLINE_MS, sign_in
from tests.support import Api, free_port, start_web

TICKER = 'i=0; while [ $i -lt 600 ]; do i=$((i+1)); echo "tick $i"; sleep 0.2; done'


def test_sign_in_find_a_job_follow_it_and_cancel_it(
    page: Page, worked: Api, screenshots: Path
) -> None:
    marker = uuid.uuid4().hex[:8]
    worked.submit(command=f"echo built {marker}-report")
    worked.submit(command="echo '<script>alert(1)</script>'", queue="alpha")
    failed = worked.submit(command="echo fetching; echo no route to host >&2; exit 3", queue="beta")
    ticker = worked.submit(command=f"# {marker}-ticker\n{TICKER}")["id"]
    worked.wait(ticker, states=["running"])
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))

    sign_in(page)
    expect(page.locator("table.jobs")).to_contain_text(f"{marker}-report")
    expect(page.locator("table.jobs")).to_contain_text("exit status 3")
    expect(page.locator("table.jobs")).to_contain_text("<script>alert(1)</script>")  # as text
    assert dialogs == []  # the script did not run
    page.screenshot(path=str(screenshots / "jobs-list.png"))

    page.fill("input[name=q]", f"{marker}-ticker")  # find it
    page.click("text=Filter")
    rows = page.locator("table.jobs tbody tr")
    expect(rows).to_have_count(1)
    page.click(f"a[href='/ui/jobs/{ticker}'] >> nth=0")  # open it
    page.wait_for_url(f"**/ui/jobs/{ticker}")
    expect(page.locator("#state")).to_have_text("running")

    output = page.locator("#output")
    page.evaluate("document.body.dataset.sameDocument = 'yes'")  # gone if the page reloads
    expect(output).to_contain_text("tick 3")
    seen = output.inner_text().count("tick")
    expect(output).to_contain_text(f"tick {seen + 5}")  # it grows, live
    assert page.evaluate("document.body.dataset.sameDocument") == "yes"
    page.screenshot(path=str(screenshots / "job-page.png"))

    page.click("nav >> text=Workers")  # the worker that runs it, and its queue
    expect(page.locator("table.jobs")).to_contain_text(f"#{ticker}")
    page.click("nav >> text=Queues")
    expect(page.locator("tr", has_text="default")).to_contain_text("1")
    page.click("a[href='/ui/jobs?queue=default&state=running']")
    expect(page.locator("table.jobs tbody tr")).to_have_count(1)
    page.goto(f"/ui/jobs/{ticker}")

    page.click("button:has-text('Cancel')")  # confirms first
    assert dialogs == [f"Cancel job #{ticker}?"]
    page.wait_for_url(f"**/ui/jobs/{ticker}")
    expect(page.locator("#state")).to_have_text("cancelled")
    expect(page.locator(".banner")).to_contain_text("cancelled")
    assert worked.job(ticker)["state"] == "cancelled"
    expect(page.locator("button:has-text('Cancel')")).to_have_count(0)
    expect(page.locator("button:has-text('Retry')")).to_have_count(1)

    page.goto(f"/ui/jobs/{failed['id']}")  # a failed job: the reason first
    expect(page.locator(".banner.bad")).to_contain_text("exit status 3")
    expect(page.locator("#output")).to_have_text("fetching\nno route to host\n")
    page.screenshot(path=str(screenshots / "failed-job.png"))


def test_submit_a_job_through_the_form_and_trigger_a_schedule(
    page: Page, worked: Api, screenshots: Path
) -> None:
    sign_in(page, "/ui/jobs/new")
    page.fill("#command", 'echo submitted; sleep 0.5; echo "from the $WHERE"')
    page.fill("#queue", "alpha")
    page.fill("#priority", "x")
    page.click("button:has-text('Submit')")
    expect(page.locator("#priority-error")).to_have_text("priority must be an integer")
    expect(page.locator("#command")).to_have_value(
        'echo submitted; sleep 0.5; echo "from the $WHERE"'
    )
    page.fill("#priority", "3")
    page.fill("#env", "WHERE=browser")
    page.click("button:has-text('Submit')")
    page.wait_for_url("**/ui/jobs/*")
    job_id = int(page.url.rsplit("/", 1)[1])
    expect(page.locator("#state")).to_have_text("succeeded")  # live, then the final page
    expect(page.locator("#output")).to_have_text("submitted\nfrom the browser\n")
    job = worked.job(job_id)
    assert (job["state"], job["queue"], job["priority"]) == ("succeeded", "alpha", 3)

    # a schedule: open its page from the navigation, trigger it, and see its job appear and run
    made = worked.http.post(
        "/schedules",
        json={
            "name": "hourly <b>report</b>",
            "every": 3600,
            "job": {"command": "echo from the schedule", "queue": "alpha"},
        },
    )
    assert made.status_code == 201, made.text
    schedule_id = made.json()["id"]
    page.click("nav >> text=Schedules")
    page.wait_for_url("**/ui/schedules")
    expect(page.locator("table.schedules")).to_contain_text("hourly <b>report</b>")  # as text
    expect(page.locator("table.schedules")).to_contain_text("never")
    page.click("text=hourly <b>report</b>")
    page.wait_for_url(f"**/ui/schedules/{schedule_id}")
    expect(page.locator("#schedule-jobs")).to_contain_text("No jobs yet")
    page.click("button:has-text('Trigger now')")
    page.wait_for_url(f"**/ui/schedules/{schedule_id}")
    rows = page.locator("#schedule-jobs tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("echo from the schedule")
    page.screenshot(path=str(screenshots / "schedule-page.png"))
    triggered = worked.http.get(f"/jobs?schedule_id={schedule_id}").json()
    assert len(triggered) == 1
    rows.first.locator("a").first.click()
    page.wait_for_url(f"**/ui/jobs/{triggered[0]['id']}")
    expect(page.locator("#state")).to_have_text("succeeded")
    expect(page.locator("#output")).to_have_text("from the schedule\n")
    expect(page.locator(f"a[href='/ui/schedules/{schedule_id}']")).to_be_visible()


def test_the_jobs_list_refreshes_itself(page: Page, worked: Api) -> None:
    sign_in(page)
    expect(page.locator("table.jobs")).to_contain_text("No jobs")
    page.evaluate("document.body.dataset.sameDocument = 'yes'")
    job_id = worked.submit(command="echo appearing")["id"]
    expect(page.locator(f"a[href='/ui/jobs/{job_id}'] >> nth=0")).to_be_visible()
    expect(page.locator("table.jobs tbody tr").first).to_contain_text("succeeded")
    assert page.evaluate("document.body.dataset.sameDocument") == "yes"


def test_the_pages_work_without_javascript(chromium: Browser, worked: Api) -> None:
    context = chromium.new_context(base_url=worked.base_url, java_script_enabled=False)
    try:
        plain = context.new_page()
        sign_in(plain, "/ui/jobs/new")
        plain.fill("#command", "echo no script needed")
        plain.click("button:has-text('Submit')")
        plain.wait_for_url("**/ui/jobs/*")
        job_id = int(plain.url.rsplit("/", 1)[1])
        worked.wait(job_id)
        plain.reload()
        expect(plain.locator("#output")).to_have_text("no script needed\n")
        expect(plain.locator("#state")).to_have_text("succeeded")
    finally:
        context.close()


def test_the_output_resumes_after_the_web_restarts(
    chromium: Browser, worked: Api, base_env: dict[str, str], log_dir: Path
) -> None:
    """A web process of its own, stopped while the page follows a job, then started again on
    the same port: the page's stream reconnects (Last-Event-ID) and goes on without a line
    lost or repeated, and the session cookie is still good (the key is the deployment's)."""
    port = free_port()
    web, url = start_web(base_env, log_dir, port)
    context = chromium.new_context(base_url=url)
    context.set_default_timeout(UI_DEADLINE_MS)
    try:
        page = context.new_page()
        ticker = worked.submit(command=TICKER)["id"]
        worked.wait(ticker, states=["running"])
        sign_in(page, f"/ui/jobs/{ticker}")
        page.evaluate("document.body.dataset.sameDocument = 'yes'")
        output = page.locator("#output")
        expect(output).to_contain_text("tick 3")
        web.stop()
        expect(page.locator("#follow-state")).to_have_text("reconnecting…")
        seen = output.inner_text().count("tick")
        web, _ = start_web(base_env, log_dir, port)
        expect(page.locator("#follow-state")).to_have_text("following…")
        expect(output).to_contain_text(f"tick {seen + 10}")
        assert page.evaluate("document.body.dataset.sameDocument") == "yes"  # no reload
        ticks = [int(line.split()[1]) for line in output.inner_text().splitlines() if line]
        assert ticks == list(range(1, len(ticks) + 1))  # none lost, none twice
    finally:
        context.close()
        worked.http.post(f"/jobs/{ticker}/cancel")
        web.stop()
