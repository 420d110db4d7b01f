"""Errors the service raises on purpose, and the HTTP status each one maps to.

    JobRunnerError
     ├── ApiError                 carries an HTTP status; the message is shown to the client
     │    ├── BadRequest          400 malformed body
     │    ├── NotFound            404
     │    ├── Conflict            409 the job's state does not allow the operation
     │    ├── PayloadTooLarge     413
     │    ├── UnsupportedMediaType 415
     │    └── ValidationFailed    422 field -> list of messages
     └── DatabaseUnavailable      503 (raised at the db boundary, from driver errors)
          └── LockConflict        503 a deadlock or lock wait timeout that outlived its retries

Routes raise these; only `service.web.app` turns them into responses.
"""

from __future__ import annotations


class JobRunnerError(Exception):
    """Unexpected job runner error."""

    status_code = 500

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)

    @property
    def message(self) -> str:
        return str(self.args[0])


class ApiError(JobRunnerError):
    """The request cannot be served."""

    status_code = 400


class BadRequest(ApiError):
    """The request body is malformed."""

    status_code = 400


class NotFound(ApiError):
    """not found"""

    status_code = 404


class Conflict(ApiError):
    """The job's state does not allow this."""

    status_code = 409


class PayloadTooLarge(ApiError):
    """The request body is too large."""

    status_code = 413


class UnsupportedMediaType(ApiError):
    """Unsupported content type: send application/json or a form."""

    status_code = 415


class ValidationFailed(ApiError):
    """Some fields are invalid."""

    status_code = 422

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("invalid fields: " + ", ".join(sorted(errors)))
        self.errors = errors


class DatabaseUnavailable(JobRunnerError):
    """The database is unavailable; try again shortly."""

    status_code = 503


class LockConflict(DatabaseUnavailable):
    """The database could not serve this now (a lock conflict); try again shortly.

    A deadlock (1213) or a lock wait timeout (1205): the transaction was rolled back whole, so
    running it again is safe. `service.db.retry_conflicts` does that a few times first."""


class BrokerUnavailable(JobRunnerError):
    """The message broker is unavailable."""

    status_code = 503
