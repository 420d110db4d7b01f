"""Start-up checks: a missing or unreachable database or broker is one clear line, not a trace."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from service import job_user
from service.broker import make_broker, make_redis_client
from service.bus import BusUnavailable, make_bus
from service.config import Settings
from service.db import MissingDriver, require_driver
from service.deployment import NamespaceTaken, claim_namespace, with_namespace
from service.errors import DatabaseUnavailable
from service.migrate import pending_migrations
from service.tokens import has_any_token


class StartupError(RuntimeError):
    """The service cannot start; the message says why, in one line."""


Check = Callable[[Settings], None]


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable URL)"


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def check_database(settings: Settings) -> None:
    where = _safe_url(settings.database_url)
    try:
        backend = make_url(settings.database_url).get_backend_name()
        if backend not in ("mysql", "mariadb", "sqlite"):
            raise ValueError(f"{backend} is not supported: use mysql+mysqldb:// (or sqlite://)")
        require_driver(settings.database_url)
        engine = sa.create_engine(settings.database_url, poolclass=sa.pool.NullPool)
    except MissingDriver as exc:
        raise StartupError(str(exc)) from None
    except Exception as exc:
        raise StartupError(f"DATABASE_URL is not usable ({where}): {_first_line(exc)}") from None
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        hint = ""
        if "Unknown database" in str(exc):
            hint = " (run `jobrunner migrate`, the release role, to create it)"
        raise StartupError(
            f"cannot reach the database at {where}: {_first_line(exc)}{hint}"
        ) from None
    finally:
        engine.dispose()
    try:
        pending = pending_migrations(settings.database_url)
    except Exception as exc:
        raise StartupError(
            f"cannot read the schema version at {where}: {_first_line(exc)}"
        ) from None
    if pending:
        raise StartupError(
            f"the database schema at {where} is not up to date (pending: {', '.join(pending)}): "
            "run `jobrunner migrate` (the release role) first"
        )


def check_broker(settings: Settings) -> None:
    if settings.uses_stub_broker:
        return
    where = _safe_url(settings.redis_url)
    try:
        client = make_redis_client(settings.redis_url)
        client.ping()
        client.close()
    except (redis.RedisError, ValueError) as exc:
        raise StartupError(f"cannot reach Redis at {where}: {_first_line(exc)}") from None


def check_namespace(settings: Settings) -> None:
    """The deployment's Redis namespace is its own (service.deployment): two deployments that
    share a Redis server must not share keys and channels."""
    if settings.uses_stub_broker:
        return
    engine = sa.create_engine(settings.database_url, poolclass=sa.pool.NullPool)
    try:
        own = with_namespace(settings, engine)
        broker = make_broker(own)
        try:
            claim_namespace(make_bus(broker, own.redis_namespace, own.redis_url), engine)
        finally:
            broker.close()
    except NamespaceTaken as exc:
        raise StartupError(str(exc)) from None
    except (BusUnavailable, DatabaseUnavailable, RuntimeError) as exc:
        raise StartupError(f"cannot check the Redis namespace: {_first_line(exc)}") from None
    finally:
        engine.dispose()


NO_TOKEN = (
    "no API token is configured: set JOBRUNNER_API_TOKENS, create one with "
    "`jobrunner token create NAME`, or set JOBRUNNER_AUTH=off to serve without authentication"
)


def check_job_user(settings: Settings) -> None:
    """A worker with a job user must be able to start commands as that user."""
    if not settings.job_user:
        return
    try:
        job_user.can_switch_to(job_user.resolve(settings.job_user))
    except job_user.JobUserError as exc:
        raise StartupError(str(exc)) from None


def check_auth(settings: Settings) -> None:
    """The web refuses to start open by accident: some token must exist, or auth be off."""
    if not settings.auth_enabled or settings.api_tokens:
        return
    engine = sa.create_engine(settings.database_url, poolclass=sa.pool.NullPool)
    try:
        if not has_any_token(engine, settings.api_tokens):
            raise StartupError(NO_TOKEN)
    except DatabaseUnavailable as exc:
        raise StartupError(f"cannot read the API tokens: {exc}") from None
    finally:
        engine.dispose()


def wait_until_ready(settings: Settings, checks: list[Check]) -> None:
    """Run the checks, retrying for JOBRUNNER_STARTUP_TIMEOUT seconds; raise the last error."""
    deadline = time.monotonic() + settings.startup_timeout
    while True:
        try:
            for check in checks:
                check(settings)
            return
        except StartupError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)
