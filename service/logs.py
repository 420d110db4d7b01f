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
    """Route every log line of this process through one structlog renderer."""
    renderer: structlog.types.Processor
    if settings.log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_process(process),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
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
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "dramatiq"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # one line per request comes from our own middleware; uvicorn's would repeat it
    logging.getLogger("uvicorn.access").disabled = True


def _add_process(process: str) -> structlog.types.Processor:
    def add(_logger: object, _name: str, event: dict[str, object]) -> dict[str, object]:
        event.setdefault("process", process)
        return event

    return add
