"""Errors the service raises on purpose, and the HTTP status each one maps to.

    JobRunnerError
     ├── ApiError                 carries an HTTP status; the message is shown to the client
     │    ├── BadRequest          400 malformed body
     │    ├── NotFound            404
     │    ├── Conflict            409 the job's state does not allow the operation
     │    ├── PayloadTooLarge     413
     │    ├── UnsupportedMediaType 415
     │    └── ValidationFailed    422 field -> list of messages
     │         └── RejectedByDatabase 422 the database refused a row's data (not an outage)
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


def printable(text: str) -> str:
    """Text that a client sent, safe to echo in a response: what is not valid Unicode (a lone
    surrogate, from JSON or from a byte that is not UTF-8) written as its escape."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class ValidationFailed(ApiError):
    """Some fields are invalid."""

    status_code = 422

    def __init__(self, errors: dict[str, list[str]]) -> None:
        # field names and messages may echo what a client sent (an unknown field's name)
        self.errors = {
            printable(name): [printable(message) for message in messages]
            for name, messages in errors.items()
        }
        super().__init__("invalid fields: " + ", ".join(sorted(self.errors)))


class RejectedByDatabase(ValidationFailed):
    """The database refused the data of this request (a check constraint, text it cannot
    store): the request's fault, not an outage. Validation should have caught it first."""

    def __init__(self, reason: str) -> None:
        super().__init__({"job": [f"could not be stored: {reason}"]})


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
