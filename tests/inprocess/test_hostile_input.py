"""Text that cannot be stored nor given to a process, in every string field of both body
kinds, is a 422 naming the field, and stores nothing; a batch the database refuses fails only
the request that caused it; a bad value stored before validation refused it is `could not
start`, never `worker lost`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import sqlalchemy as sa

from actors.context import WorkerContext
from actors.run_job import keep_queue
from service import jobs
from service.db import create_engine
from service.errors import DatabaseUnavailable, RejectedByDatabase
from service.jobs import JobSpec
from service.web.submit import Submitter
from tests.support import Api

#: strings a JSON body can carry that are no text a job can keep: lone surrogates (high, low,
#: and one of those `surrogateescape` makes of a byte) and a NUL, which no argv or env takes
BAD_STRINGS = {
    "high surrogate": "\ud800",
    "low surrogate": "\udfff",
    "byte": "\udc80",
    "NUL": "\x00",
}

#: (the field the 422 must name, how to put a bad string into a create body)
JSON_FIELDS: list[tuple[str, Any]] = [
    ("command", lambda bad: {"command": f"echo {bad}"}),
    ("argv", lambda bad: {"argv": [f"echo{bad}"]}),
    ("argv", lambda bad: {"argv": ["echo", f"a{bad}"]}),
    ("queue", lambda bad: {"command": "true", "queue": f"q{bad}"}),
    ("run_at", lambda bad: {"command": "true", "run_at": f"2026-01-01T00:00:00{bad}"}),
    ("env", lambda bad: {"command": "true", "env": {"A": f"x{bad}"}}),
    ("env", lambda bad: {"command": "true", "env": {f"A{bad}": "x"}}),
]
EDIT_FIELDS = [(name, make) for name, make in JSON_FIELDS if name != "env"]


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()  # ASCII: a surrogate travels as its \u escape


def _post_json(api: Api, path: str, body: dict[str, Any], method: str = "POST") -> Any:
    return api.http.request(
        method, path, content=_json(body), headers={"content-type": "application/json"}
    )


@pytest.mark.parametrize(("field", "make"), JSON_FIELDS)
def test_json_create_refuses_bad_text_in_every_field(api: Api, field: str, make: Any) -> None:
    for name, bad in BAD_STRINGS.items():
        for body in (make(bad), {"job": make(bad)}):  # bare and wrapped
            response = _post_json(api, "/jobs", body)
            assert response.status_code == 422, (name, body, response.text)
            assert list(response.json()) == [field], (name, body)
    assert api.http.get("/jobs").json() == []


@pytest.mark.parametrize(("field", "make"), EDIT_FIELDS)
def test_json_edit_refuses_bad_text_in_every_field(api: Api, field: str, make: Any) -> None:
    job = api.submit(command="true", queue="keep")
    for name, bad in BAD_STRINGS.items():
        body = make(bad)
        if field not in ("command", "argv"):
            del body["command"]  # an edit needs no command
        response = _post_json(api, f"/jobs/{job['id']}", body, method="PATCH")
        assert response.status_code == 422, (name, response.text)
        assert list(response.json()) == [field], name
    assert api.job(job["id"]) == job


def test_a_field_name_that_is_not_text_is_named_in_the_answer(api: Api) -> None:
    for body in ({"command": "true", "\ud800": 1}, {"job": {"command": "true"}, "\udcff": 1}):
        response = api.http.post(
            "/jobs", content=_json(body), headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, response.text
        (name,) = response.json()
        assert name.startswith("\\ud") and "not" in response.json()[name][0]


#: bytes that are no UTF-8: an invalid byte, an overlong NUL, an encoded surrogate, a lone
#: continuation byte; raw and percent-encoded; and a NUL
BAD_BYTES = {
    "invalid byte": b"%ff",
    "raw invalid byte": b"\xff",
    "overlong NUL": b"%c0%80",
    "encoded surrogate": b"%ed%a0%80",
    "raw encoded surrogate": b"\xed\xa0\x80",
    "continuation byte": b"%80",
    "NUL": b"%00",
}
FORM_FIELDS = [
    ("command", lambda bad: b"job[command]=echo+" + bad),
    ("argv", lambda bad: b"job[argv][]=echo" + bad),
    ("argv", lambda bad: b"job[argv][]=echo&job[argv][]=a" + bad),
    ("queue", lambda bad: b"job[command]=true&job[queue]=q" + bad),
    ("run_at", lambda bad: b"job[command]=true&job[run_at]=2026-01-01T00:00:00" + bad),
    ("env", lambda bad: b"job[command]=true&job[env][A]=x" + bad),
    ("priority", lambda bad: b"job[command]=true&job[priority]=1" + bad),
]


def _multipart(urlencoded: bytes) -> bytes:
    """The same fields as a multipart body (raw bytes: the percent escapes decoded)."""
    from urllib.parse import unquote_to_bytes

    parts = []
    for pair in urlencoded.split(b"&"):
        name, _, value = pair.partition(b"=")
        value = unquote_to_bytes(value.replace(b"+", b" "))
        parts.append(
            b'--XyZ\r\nContent-Disposition: form-data; name="' + name + b'"\r\n\r\n' + value
        )
    return b"\r\n".join(parts) + b"\r\n--XyZ--\r\n"


def _post_form(api: Api, fields: bytes, kind: str) -> Any:
    if kind == "urlencoded":
        content_type = "application/x-www-form-urlencoded"
        return api.http.post("/jobs", content=fields, headers={"content-type": content_type})
    if kind == "multipart":
        content_type = "multipart/form-data; boundary=XyZ"
        return api.http.post(
            "/jobs", content=_multipart(fields), headers={"content-type": content_type}
        )
    # the Rails way: job[...] in the query string, raw bytes percent-encoded
    query = fields.replace(b"\xff", b"%ff").replace(b"\xed\xa0\x80", b"%ed%a0%80")
    return api.http.post("/jobs?" + query.decode("ascii"))


@pytest.mark.parametrize(("field", "make"), FORM_FIELDS)
@pytest.mark.parametrize("kind", ["urlencoded", "multipart", "query"])
def test_form_create_refuses_bytes_that_are_no_text_in_every_field(
    api: Api, field: str, make: Any, kind: str
) -> None:
    for name, bad in BAD_BYTES.items():
        response = _post_form(api, make(bad), kind)
        assert response.status_code == 422, (name, response.text)
        assert list(response.json()) == [field], name
    assert api.http.get("/jobs").json() == []


def test_form_text_that_is_utf8_is_kept_exactly(api: Api) -> None:
    response = api.http.post(
        "/jobs",
        content="job[command]=echo+%C3%A9t%C3%A9+✓&job[env][A]=%E2%82%AC".encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["command"] == "echo été ✓"
    multipart = _multipart(b"job[command]=echo+%C3%A9&job[queue]=q")
    response = api.http.post(
        "/jobs", content=multipart, headers={"content-type": "multipart/form-data; boundary=XyZ"}
    )
    assert response.status_code == 201, response.text
    assert (response.json()["command"], response.json()["queue"]) == ("echo é", "q")


def test_a_multipart_file_or_a_malformed_body_is_400(api: Api) -> None:
    file = b'--XyZ\r\nContent-Disposition: form-data; name="job[command]"; filename="a"\r\n\r\nx'
    for body, content_type in (
        (file + b"\r\n--XyZ--\r\n", "multipart/form-data; boundary=XyZ"),
        (b"no boundary here", "multipart/form-data"),
        (
            b"--XyZ\r\nContent-Type: text/plain\r\n\r\nx\r\n--XyZ--\r\n",
            "multipart/form-data; boundary=XyZ",
        ),
    ):
        response = api.http.post("/jobs", content=body, headers={"content-type": content_type})
        assert response.status_code == 400, response.text
        assert "error" in response.json()
    assert api.http.get("/jobs").json() == []


def test_an_idempotency_key_that_is_not_ascii_is_a_422_naming_it(api: Api) -> None:
    for key in (b"k\xff", b"k\xed\xa0\x80", b"a b", b"k" * 256):
        response = api.http.post(
            "/jobs", json={"command": "true"}, headers={"Idempotency-Key": key}
        )
        assert response.status_code == 422, response.text
        assert list(response.json()) == ["Idempotency-Key"]
    assert api.http.get("/jobs").json() == []


def test_the_query_string_counts_as_in_rails_and_a_field_given_twice_is_refused(api: Api) -> None:
    response = api.http.post("/jobs?job[command]=date&job[priority]=3")
    assert response.status_code == 201, response.text
    assert (response.json()["command"], response.json()["priority"]) == ("date", 3)
    mixed = api.http.post("/jobs?job[priority]=4", data={"job[command]": "date"})
    assert mixed.status_code == 201 and mixed.json()["priority"] == 4
    twice = api.http.post("/jobs?job[command]=date", json={"command": "true"})
    assert twice.status_code == 422
    assert list(twice.json()) == ["command"]
    edited = api.http.patch(f"/jobs/{response.json()['id']}?job[priority]=9")
    assert edited.status_code == 204
    assert api.job(response.json()["id"])["priority"] == 9


# --- the batching submitter -----------------------------------------------------------------


def _spec(**fields: Any) -> JobSpec:
    values: dict[str, Any] = dict(
        command="true",
        argv=None,
        queue="hostile",
        priority=0,
        timeout=5,
        max_retries=0,
        run_at=None,
        env=None,
    )
    return JobSpec(**{**values, **fields})


def submit_in_one_batch(submitter: Submitter, specs: list[JobSpec]) -> list[Any]:
    """Submit every spec before the submitter's thread starts, so that they form one batch;
    the result (job, created) or the exception of each."""

    async def run() -> list[Any]:
        tasks = [asyncio.ensure_future(submitter.submit(spec, None)) for spec in specs]
        await asyncio.sleep(0)  # every task has queued its request
        submitter.start()
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        return asyncio.run(run())
    finally:
        submitter.stop()


def test_a_batch_the_database_refuses_fails_only_the_request_that_caused_it(
    worker: WorkerContext, engine: sa.Engine
) -> None:
    specs = [_spec(command=f"echo {n}") for n in range(6)]
    specs[3] = _spec(command="echo \ud800")  # validation refuses it; here it reaches the insert
    results = submit_in_one_batch(Submitter(engine, worker.dispatcher), specs)
    assert isinstance(results[3], RejectedByDatabase)
    assert results[3].status_code == 422
    good = [r for n, r in enumerate(results) if n != 3]
    assert all(isinstance(r, tuple) and r[1] for r in good), results
    with engine.begin() as conn:
        commands = conn.execute(sa.text("SELECT command FROM jobs ORDER BY id")).scalars().all()
    assert commands == [f"echo {n}" for n in range(6) if n != 3]


def test_only_an_outage_fails_a_whole_batch(worker: WorkerContext, tmp_path: Any) -> None:
    (tmp_path / "not-a-file").mkdir()
    away = create_engine(f"sqlite:///{tmp_path / 'not-a-file'}")
    try:
        results = submit_in_one_batch(Submitter(away, worker.dispatcher), [_spec()] * 4)
    finally:
        away.dispose()
    assert all(isinstance(r, DatabaseUnavailable) for r in results), results
    assert all(r.status_code == 503 for r in results)


# --- jobs stored before validation refused them -------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        _spec(queue="default", env={"A": "\ud800"}),
        _spec(queue="default", env={"\ud800": "x"}),
        _spec(queue="default", command="echo", argv=["echo", "\udc80\ud800"]),
        _spec(queue="default", command="echo", argv=["echo", "a\x00b"]),
        _spec(queue="default", env={"A": "a\x00b"}),
    ],
    ids=["env value", "env name", "argv surrogate", "argv NUL", "env NUL"],
)
def test_a_stored_value_no_process_takes_is_could_not_start(
    api: Api, worker: WorkerContext, spec: JobSpec
) -> None:
    job, _ = jobs.create(worker.engine, spec)  # as if stored before validation refused it
    assert keep_queue(worker, "default") == 1
    with worker.engine.begin() as conn:
        state, error = conn.execute(
            sa.text("SELECT state, last_error FROM jobs WHERE id = :id"), {"id": job.id}
        ).one()
    assert state == "failed"
    assert error.startswith("could not start:"), error
    error.encode("utf-8")  # and the error itself is storable text
