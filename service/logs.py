"""Logging: one line per event, key=value for people or JSON for machines (structlog).

Our own code logs events with fields (`log.info("job finished", job_id=7, state="failed")`);
the lines of libraries (uvicorn, Dramatiq) go through the same renderer. Env values, tokens and
output never go into a log line: callers pass ids and states, not payloads.

Some values come from clients (a request's path, above all), so no value may break a line or
fake one: in the console format every control character (and every Unicode line or paragraph
separator, and the bidirectional overrides that reorder what a terminal shows) is escaped
(`\r`, `\x1b`, `\u2028`) before rendering; the JSON format escapes them by itself.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

from service.config import Settings


def configure(settings: Settings, *, process: str) -> None:
    """Send every log line of this process to stderr, logfmt (or JSON), one renderer for all.

    Our own events go straight from structlog to stderr (no stdlib record: a request line costs
    little); the lines of libraries (uvicorn, Dramatiq, yoyo) go through the stdlib logging
    handler with the same processors and renderer.
    """
    renderer: structlog.types.Processor
    escape: list[structlog.types.Processor] = []
    if settings.log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.processors.LogfmtRenderer(
            key_order=["timestamp", "level", "event"], drop_missing=True
        )
        escape = [escape_controls]
    level = logging.getLevelName(settings.log_level.upper())
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            _add_process(process),
            structlog.processors.format_exc_info,
            *escape,
            renderer,
        ],
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            stamp,
            _add_process(process),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            *escape,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "dramatiq"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # one line per request comes from our own middleware; uvicorn's would repeat it
    logging.getLogger("uvicorn.access").disabled = True


def _add_process(process: str) -> structlog.types.Processor:
    def add(
        _logger: object, _name: str, event: structlog.types.EventDict
    ) -> structlog.types.EventDict:
        event.setdefault("process", process)
        return event

    return add


#: C0 and C1 controls, DEL, line and paragraph separators, bidirectional overrides and isolates
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_PLAIN = (int, float, bool, type(None))


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """`text` with every character that could break or fake a log line escaped."""
    return _UNSAFE.sub(_escaped, text) if _UNSAFE.search(text) else text


def escape_controls(
    _logger: object, _name: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """A processor: every key and value of the event as text with its controls escaped."""
    safe: dict[str, Any] = {}
    for key, value in event.items():
        if not isinstance(value, _PLAIN):
            value = escape(value if isinstance(value, str) else str(value))
        safe[escape(str(key))] = value
    return safe
