"""/metrics: Prometheus text, right across several web and worker processes."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support import AUTH, Api, start_web, wait_for


def scrape(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{base_url}/metrics", headers=AUTH, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_need_a_token(api: Api) -> None:
    assert httpx.get(f"{api.base_url}/metrics").status_code == 401


def test_job_counters_and_histograms_move_as_jobs_run(worked_api: Api) -> None:
    before = scrape(worked_api.base_url)
    ok = worked_api.submit(command="true", queue="alpha")
    bad = worked_api.submit(command="exit 2", queue="alpha")
    worked_api.wait(ok["id"])
    worked_api.wait(bad["id"])

    expected = {
        ("jobrunner_jobs_created_total", ("alpha",)): 2,
        ("jobrunner_jobs_started_total", ("alpha",)): 2,
        ("jobrunner_pickup_latency_seconds_count", ("alpha",)): 2,
        ("jobrunner_jobs_finished_total", ("alpha", "succeeded")): 1,
        ("jobrunner_jobs_finished_total", ("alpha", "failed")): 1,
        ("jobrunner_run_duration_seconds_count", ("alpha", "succeeded")): 1,
        ("jobrunner_run_duration_seconds_count", ("alpha", "failed")): 1,
    }

    def labels_of(values: tuple[str, ...]) -> dict[str, str]:
        return dict(zip(("queue", "state"), values, strict=False))

    def deltas(now: dict) -> dict:
        return {
            key: value(now, key[0], **labels_of(key[1]))
            - value(before, key[0], **labels_of(key[1]))
            for key in expected
        }

    last: dict = {}

    def moved() -> dict | None:
        nonlocal last
        now = scrape(worked_api.base_url)
        last = deltas(now)
        return now if last == expected else None

    try:
        after = wait_for(moved, timeout=10, what="the counters to move")
    except AssertionError:
        raise AssertionError(f"deltas {last}, expected {expected}") from None
    assert value(after, "jobrunner_pickup_latency_seconds_bucket", queue="alpha", le="+Inf") >= 2


def test_queue_gauges_come_from_the_database(api: Api) -> None:
    for _ in range(3):
        api.submit(command="true", queue="unserved")  # no worker serves it
    samples = scrape(api.base_url)
    assert value(samples, "jobrunner_queue_depth", queue="unserved") == 3
    assert value(samples, "jobrunner_jobs", queue="unserved", state="queued") == 3
    assert value(samples, "jobrunner_oldest_waiting_seconds", queue="unserved") >= 0
    assert value(samples, "jobrunner_jobs_running", queue="unserved") == 0


def test_counts_from_another_web_process_show_in_this_one(
    api: Api, base_env: dict[str, str], log_dir: Path
) -> None:
    other, other_url = start_web(base_env, log_dir)
    try:
        before = scrape(api.base_url)
        with Api(other_url) as elsewhere:
            for _ in range(4):
                elsewhere.submit(command="true", queue="counted")
        key = {"route": "/jobs", "method": "POST", "status": "201"}

        def counted() -> bool:
            now = scrape(api.base_url)
            created = value(now, "jobrunner_jobs_created_total", queue="counted")
            posts = value(now, "jobrunner_http_requests_total", **key)
            return created - value(
                before, "jobrunner_jobs_created_total", queue="counted"
            ) == 4 and (posts - value(before, "jobrunner_http_requests_total", **key) >= 4)

        wait_for(counted, timeout=10, what="the other process's counts")
    finally:
        other.stop()


def test_routes_are_labelled_by_template_not_by_id(api: Api) -> None:
    job = api.submit(command="true", queue="unserved")
    api.http.get(f"/jobs/{job['id']}")
    wait_for(
        lambda: (
            value(
                scrape(api.base_url),
                "jobrunner_http_requests_total",
                route="/jobs/{job_id:int}",
                method="GET",
                status="200",
            )
            > 0
        ),
        timeout=10,
    )
    text = httpx.get(f"{api.base_url}/metrics", headers=AUTH).text
    assert not re.search(rf'route="/jobs/{job["id"]}"', text)


def test_workers_and_end_reasons_are_counted(worked_api: Api) -> None:
    before = scrape(worked_api.base_url)
    job = worked_api.submit(command="kill -9 $$", queue="alpha")
    assert worked_api.wait(job["id"])["end_reason"] == "signal"

    def counted() -> dict | None:
        now = scrape(worked_api.base_url)
        key = {"queue": "alpha", "end_reason": "signal"}
        delta = value(now, "jobrunner_attempts_ended_total", **key) - value(
            before, "jobrunner_attempts_ended_total", **key
        )
        return now if delta == 1 else None

    after = wait_for(counted, timeout=10, what="the attempt's end to be counted")
    assert value(after, "jobrunner_workers") >= 1  # the shared worker, alive
