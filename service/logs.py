"""Logging: one line per event, key=value for people or JSON for machines (structlog).

Our own code logs events with fields (`log.info("job finished", job_id=7, state="failed")`);
the lines of libraries (uvicorn, Dramatiq) go through the same renderer. Env values, tokens and
output never go into a log line: callers pass ids and states, not payloads.

Some values come from clients (a request's path, above all), so no value may break a line or
fake one: in the console format every control character (and every Unicode line or paragraph
separator, and the bidirectional overrides that reorder what a terminal shows) is escaped
(`\r`, `\x1b`, `\u2028`) as the line is rendered; the JSON format escapes them by itself.
"""

from __future__ import annotations

import logging
import re
import sys

import structlog

from service.config import Settings
from service.logbatch import BatchedHandler, BatchedLineLogger, BatchedLines

#: the batched stderr of this process, if `configure(batched=True)` made one
_batched: BatchedLines | None = None


def configure(settings: Settings, *, process: str, batched: bool = False) -> None:
    """Send every log line of this process to stderr, logfmt (or JSON), one renderer for all.

    Our own events go straight from structlog to stderr (no stdlib record: a request line costs
    little); the lines of libraries (uvicorn, Dramatiq, yoyo) go through the stdlib logging
    handler with the same processors and renderer. `batched`: hand lines on in batches
    (service.logbatch), for a Dramatiq worker process, whose stderr is a pipe to its parent.
    """
    global _batched
    if batched and _batched is None:
        _batched = BatchedLines(sys.stderr)
    stream = _batched if batched else None
    renderer: structlog.types.Processor
    if settings.log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = render_logfmt
    level = logging.getLevelName(settings.log_level.upper())
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            _add_process(process),
            structlog.processors.format_exc_info,
            renderer,
        ],
        logger_factory=(
            (lambda *_args: BatchedLineLogger(stream))
            if stream is not None
            else structlog.WriteLoggerFactory(sys.stderr)
        ),
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
            renderer,
        ],
    )
    handler = BatchedHandler(stream) if stream is not None else logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "dramatiq"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # one line per request comes from our own middleware; uvicorn's would repeat it
    logging.getLogger("uvicorn.access").disabled = True


def flush() -> None:
    """Write the lines a batched stderr holds (a worker process about to stop)."""
    if _batched is not None:
        _batched.flush_now()


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


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """`text` with every character that could break or fake a log line escaped."""
    return _UNSAFE.sub(_escaped, text) if _UNSAFE.search(text) else text


#: the keys that lead every console line, in this order (left out when absent)
LEADING_KEYS = ("timestamp", "level", "event")


def render_logfmt(_logger: object, _name: str, event: structlog.types.EventDict) -> str:
    """The event as one logfmt line, every key and value escaped (`escape`) as it is rendered.

    What structlog's LogfmtRenderer(key_order=LEADING_KEYS, drop_missing=True) renders after an
    escaping pass, in one pass: a worker writes two lines per job, and the two passes were
    ~50 us a line. A value with a space, `=` or `"` is quoted (its `\\` and `"` escaped); None
    renders as `key=`, True as the bare key, False as `key=false`.
    """
    parts: list[str] = []
    for key in LEADING_KEYS:
        value = event.pop(key, None)
        if value is not None:
            parts.append(_pair(key, value))
    for key, value in event.items():
        plain = isinstance(key, str) and key.isidentifier()  # nothing in it to escape
        parts.append(_pair(key if plain else _safe_key(key), value))
    return " ".join(parts)


def _safe_key(key: object) -> str:
    text = escape(str(key))
    if " " in text:
        raise ValueError(f"Invalid key: {text!r}")
    return text


def _pair(key: str, value: object) -> str:
    if value is None:
        return key + "="
    if value is True:
        return key
    if value is False:
        return key + "=false"
    if isinstance(value, int | float):
        return key + "=" + str(value)
    text = escape(str(value))
    if " " in text or "=" in text or '"' in text:
        return key + '="' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return key + "=" + text
