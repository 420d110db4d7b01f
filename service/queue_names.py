"""Which queue names may hold jobs: the operator's patterns and a cap on how many at once.

A queue costs a worker nothing per name (one Dramatiq queue serves them all: service.dispatch),
but every name with live jobs costs the sweeper and GET /queues a little, and a client that
invents a name per job should meet a limit, not fill the system: JOBRUNNER_MAX_QUEUES caps the
distinct queues with jobs that are not final (1,000 by default), JOBRUNNER_ALLOWED_QUEUES
(patterns such as `reports`, `deploy-*`) restricts the names. Both answer 422 naming `queue`.

The cap is counted from the database, with the names seen in the last few seconds kept in
memory: a request for a known name costs nothing, a new name one grouped read. Two requests
that bring new names at the same instant may both pass: the cap can be exceeded by as many
such requests as run at once, never more.
"""

from __future__ import annotations

import fnmatch
import threading
import time

from sqlalchemy.engine import Engine

from service import queries
from service.config import Settings
from service.db import transaction
from service.errors import ValidationFailed

KNOWN_FOR_S = 5.0


class QueueNames:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.limit = settings.max_queues
        self.patterns = settings.allowed_queues
        self._known: set[str] = set()
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def admit(self, queue: str) -> None:
        """Refuse (422) a queue name that the patterns do not allow, or a new queue past the
        cap; return for any other."""
        if self.patterns and not any(fnmatch.fnmatchcase(queue, p) for p in self.patterns):
            allowed = ", ".join(self.patterns)
            raise ValidationFailed({"queue": [f"is not an allowed queue (allowed: {allowed})"]})
        if not self.limit:
            return
        with self._lock:
            if queue in self._known and time.monotonic() - self._read_at < KNOWN_FOR_S:
                return
            with transaction(self.engine) as conn:
                self._known = set(queries.waiting_queues(conn))
            self._read_at = time.monotonic()
            if queue in self._known or len(self._known) < self.limit:
                self._known.add(queue)
                return
        raise ValidationFailed(
            {
                "queue": [
                    f"is a new queue, and {self.limit} queues have jobs already (at most "
                    "JOBRUNNER_MAX_QUEUES may at once): use one of them, or wait until one "
                    "empties"
                ]
            }
        )
