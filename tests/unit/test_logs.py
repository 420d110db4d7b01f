"""Log lines: a value from a client cannot break a line or fake one (service.logs)."""

from __future__ import annotations

import json
import logging

import hypothesis
import pytest
import structlog
from hypothesis import strategies as st

from service import logs
from service.config import Settings

#: what an attacker puts in a path (%0d, %0a, %1b, %00, ...) to end a line and start a fake one
FORGERIES = [
    "/x\r\ntimestamp=2026-12-01T00:00:00Z level=info event=request path=/jobs status=201",
    "/x\rtimestamp=... event=request status=201",
    "/x\x1b[2K\x1b[1Gevent=request status=201",
    "/x\x00\x7f\x85\x9b",
    "/x\u2028event=request\u2029status=201",
    "/x\u202eevent=request",
]


@pytest.mark.parametrize("value", FORGERIES)
def test_escape_leaves_no_control_character(value: str) -> None:
    escaped = logs.escape(value)
    assert escaped.isprintable()
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in escaped)


def test_escape_keeps_ordinary_text_as_it_is() -> None:
    assert logs.escape("/jobs/7 état=ok ✓") == "/jobs/7 état=ok ✓"
    assert logs.escape("a\tb\nc\x1bd") == "a\\tb\\nc\\x1bd"


def _lines(capsys: pytest.CaptureFixture[str], log_format: str, value: str) -> list[str]:
    logs.configure(Settings(log_format=log_format), process="test")
    try:
        structlog.get_logger("t").info("request", path=value, **{"odd\rkey": value})
        logging.getLogger("uvicorn.error").warning("Invalid request %s", value)
        return capsys.readouterr().err.splitlines()
    finally:
        structlog.reset_defaults()


@pytest.mark.parametrize("value", FORGERIES)
def test_each_event_is_one_line_in_the_console_format(
    capsys: pytest.CaptureFixture[str], value: str
) -> None:
    lines = _lines(capsys, "console", value)
    assert len(lines) == 2, lines
    assert all(line.startswith("timestamp=") for line in lines)
    assert all(line.isprintable() for line in lines)


@pytest.mark.parametrize("value", FORGERIES)
def test_each_event_is_one_line_of_json(capsys: pytest.CaptureFixture[str], value: str) -> None:
    lines = _lines(capsys, "json", value)
    assert len(lines) == 2, lines
    assert json.loads(lines[0])["path"] == value  # JSON escapes, and keeps the value exact
    assert json.loads(lines[1])["event"] == f"Invalid request {value}"


def _structlog_reference(event: dict[object, object]) -> str:
    """What the console format rendered before `render_logfmt`: every key and value escaped
    (plain numbers, booleans and None left as they are), then structlog's LogfmtRenderer."""
    escaped: dict[str, object] = {}
    for key, value in event.items():
        if not isinstance(value, int | float | type(None)):
            value = logs.escape(str(value))
        escaped[logs.escape(str(key))] = value
    renderer = structlog.processors.LogfmtRenderer(
        key_order=list(logs.LEADING_KEYS), drop_missing=True
    )
    return renderer(None, "info", escaped)


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(),
    st.sampled_from([*FORGERIES, 'a "quoted" \\ value', "k=v", "\\n", ""]),
)
_KEYS = st.one_of(
    st.sampled_from(["timestamp", "level", "event", "job_id", "état", "odd\rkey", "x\u2028"]),
    st.text(alphabet=st.characters(blacklist_characters=" "), min_size=1),
)


# the first draw of text builds Hypothesis's Unicode tables (seconds on a cold cache)
@hypothesis.settings(suppress_health_check=[hypothesis.HealthCheck.too_slow], deadline=None)
@hypothesis.given(st.dictionaries(_KEYS, _VALUES, max_size=8))
def test_the_console_renderer_renders_what_structlog_did_after_escaping(
    event: dict[str, object],
) -> None:
    expected = _structlog_reference(dict(event))
    assert logs.render_logfmt(None, "info", dict(event)) == expected


def test_a_key_with_a_space_is_refused_as_structlog_refused_it() -> None:
    with pytest.raises(ValueError, match="Invalid key"):
        logs.render_logfmt(None, "info", {"event": "x", "a key": 1})
