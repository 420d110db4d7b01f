"""ApiClient against canned answers (httpx.MockTransport): headers, pages, errors, output."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import httpx
import pytest

from client.api import ApiClient, ApiError, ClientError, Unreachable, error_message

Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, token: str | None = None) -> ApiClient:
    return ApiClient("http://jobs.test/prefix/", token, transport=httpx.MockTransport(handler))


def test_the_token_is_sent_as_a_bearer_and_the_body_as_json() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"id": 1, "state": "queued"})

    client(handler, token="s3cret").submit({"argv": ["true"]}, idempotency_key="deploy-42")
    request = seen[0]
    assert request.url == "http://jobs.test/prefix/jobs"
    assert request.headers["Authorization"] == "Bearer s3cret"
    assert request.headers["Idempotency-Key"] == "deploy-42"
    assert json.loads(request.content) == {"argv": ["true"]}


def test_no_token_no_authorization_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": 1})

    client(handler).job(1)
    assert "Authorization" not in seen[0].headers


def test_pages_follow_the_next_links_as_given() -> None:
    pages = {
        None: ([{"id": 3}, {"id": 2}], '</prefix/jobs?order=desc&limit=2&after=2>; rel="next"'),
        "2": ([{"id": 1}], None),
    }
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        items, link = pages[request.url.params.get("after")]
        return httpx.Response(200, json=items, headers={"Link": link} if link else {})

    api = client(handler)
    assert list(api.pages(limit=2, order="desc", follow_links=True)) == [
        [{"id": 3}, {"id": 2}],
        [{"id": 1}],
    ]
    assert seen == [
        "http://jobs.test/prefix/jobs?limit=2&order=desc",
        "http://jobs.test/prefix/jobs?order=desc&limit=2&after=2",
    ]
    assert list(api.pages(limit=2, order="desc")) == [[{"id": 3}, {"id": 2}]]


@pytest.mark.parametrize(
    ("status", "body", "message", "exit_code"),
    [
        (404, {"error": "no job 9"}, "no job 9 (HTTP 404)", 1),
        (409, {"error": "job 9 is already succeeded"}, "job 9 is already succeeded (HTTP 409)", 1),
        (
            422,
            {"command": ["can't be blank"], "priority": ["must be an integer"]},
            "invalid: command can't be blank; priority must be an integer (HTTP 422)",
            2,
        ),
        (
            400,
            {"error": "Idempotency-Key must be ..."},
            "Idempotency-Key must be ... (HTTP 400)",
            2,
        ),
        (401, None, "not authorized: set JOBRUNNER_TOKEN or --token (HTTP 401)", 1),
        (502, None, "Bad Gateway (HTTP 502)", 1),
    ],
)
def test_errors_are_one_line(status: int, body: object, message: str, exit_code: int) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body) if body else httpx.Response(status)

    with pytest.raises(ApiError) as caught:
        client(handler).job(9)
    assert (str(caught.value), caught.value.exit_code) == (message, exit_code)
    assert caught.value.transient == (status == 502)


def test_an_html_error_page_is_shortened_to_one_line() -> None:
    response = httpx.Response(500, text="<html>\n<body>\nOops\n</body></html>" + "x" * 500)
    message = error_message(response)
    assert "\n" not in message and message.startswith("Internal Server Error: <html> <body>")
    assert len(message) < 250


def test_a_refused_connection_names_the_url() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    with pytest.raises(Unreachable) as caught:
        client(handler).job(1)
    assert str(caught.value) == "cannot connect to http://jobs.test/prefix: connection refused"
    assert caught.value.transient and caught.value.exit_code == 1


def test_output_reports_where_the_data_starts() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["offset"] == "5"
        headers = {"X-Output-Offset": "8", "X-Output-Bytes": "12", "X-Job-State": "running"}
        return httpx.Response(200, content=b"\xffend", headers=headers)

    chunk = client(handler).output(7, offset=5)
    assert (chunk.offset, chunk.data, chunk.total, chunk.state) == (8, b"\xffend", 12, "running")


def test_a_redirect_or_a_page_that_is_not_json_says_the_url_is_wrong() -> None:
    def redirect(request: httpx.Request) -> httpx.Response:
        return httpx.Response(301, headers={"Location": "https://jobs.test/prefix/jobs/1"})

    with pytest.raises(ApiError) as caught:
        client(redirect).job(1)
    assert str(caught.value) == (
        "the server sends this request to https://jobs.test/prefix/jobs/1: fix the URL (HTTP 301)"
    )

    def html(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, html="<html>a welcome page</html>")

    with pytest.raises(
        ClientError, match=re.escape("did not answer with JSON: is http://jobs.test/prefix")
    ):
        client(html).job(1)
    with pytest.raises(ClientError, match="did not answer with JSON"):
        list(client(html).pages())
