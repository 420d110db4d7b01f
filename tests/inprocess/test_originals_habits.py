"""The original's habits that its clients may rely on, each behind the setting that restores
it (docs/migrating.md): unknown fields dropped silently (JOBRUNNER_UNKNOWN_FIELDS=ignore)."""

from __future__ import annotations

import dataclasses

import pytest

from service.config import Settings
from tests.support import Api


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, unknown_fields="ignore")


def test_unknown_fields_are_dropped_as_strong_parameters_did(api: Api) -> None:
    for response in (
        api.http.post("/jobs", data={"job[command]": "true", "job[name]": "x", "job[a-b]": "y"}),
        api.http.post("/jobs", json={"job": {"command": "true", "handler": "---"}, "utf8": "✓"}),
        api.http.post(
            "/jobs",
            json={
                "command": "true",
                "\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace"): 1,
            },
        ),
    ):
        assert response.status_code == 201, response.text
        assert "name" not in response.json() and "handler" not in response.json()
    job = api.submit(command="true", attempts=9, state="succeeded")
    assert (job["attempts"], job["state"]) == (0, "queued")
    edit = api.http.patch(f"/jobs/{job['id']}", json={"priority": 2, "nickname": "x"})
    assert edit.status_code == 204
    assert api.job(job["id"])["priority"] == 2


def test_known_fields_are_still_validated(api: Api) -> None:
    response = api.http.post("/jobs", json={"command": "true", "priority": "high", "x": 1})
    assert response.status_code == 422
    assert list(response.json()) == ["priority"]
    assert api.http.post("/jobs", data={"job[name]": "x"}).json() == {"command": ["can't be blank"]}


def test_the_document_says_other_fields_are_accepted(api: Api) -> None:
    schemas = api.http.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["JobInput"]["additionalProperties"] is True
