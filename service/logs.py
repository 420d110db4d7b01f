"""Logging: one line per event, key=value for people or JSON for machines (structlog).

Our own code logs events with fields (`log.info("job finished", job_id=7, state="failed")`);
the lines of libraries (uvicorn, Dramatiq) go through the same renderer. Env values, tokens and
output never go into a log line: callers pass ids and states, not payloads.
"""

from __future__ import annotations

import logging
import sys

import structlog

from service.config import Settings


def configure(settings: Settings, *, process: str) -> None:
    """Send every log line of this process to stderr, logfmt (or JSON), one renderer for all.

    Our own events go straight from structlog to stderr (no stdlib record: a request line costs
    little); the lines of libraries (uvicorn, Dramatiq, yoyo) go through the stdlib logging
    handler with the same processors and renderer.
    """
    renderer: structlog.types.Processor
    if settings.log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.processors.LogfmtRenderer(
            key_order=["timestamp", "level", "event"], drop_missing=True
        )
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
