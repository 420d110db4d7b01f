"""Settings: read once from the environment, passed down everywhere else.

Names without a prefix (`DATABASE_URL`, `REDIS_URL`, `JOB_HOME`, `PORT`, `WORKER_PROCESSES`,
`WORKER_THREADS`) are the public ones that deployments and acceptance tests set; everything
specific to this project is `JOBRUNNER_*`. As the original did, a deployment may give the
database as docker-link variables (`MYSQL_PORT_3306_TCP_ADDR`, ...: `LINK_VARIABLES`) instead
of `DATABASE_URL`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from service.policy import CommandPolicy
from service.scopes import parse_entry
from service.states import Retention, RetryPolicy

if TYPE_CHECKING:
    from service.destinations import AllowList

DEFAULT_DATABASE_URL = "mysql+mysqldb://root@127.0.0.1:3306/jobrunner"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
QUEUE_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
#: the original's database variables (docker `--link` names), and what each gave it when unset
LINK_VARIABLES = {
    "MYSQL_PORT_3306_TCP_ADDR": "127.0.0.1",  # the original: localhost
    "MYSQL_PORT_3306_TCP_PORT": "3306",
    "MYSQL_DATABASE_NAME": "http_job_runner_production",
    "MYSQL_ENV_MYSQL_USER": "root",
    "MYSQL_ENV_MYSQL_PASSWORD": "",
}


class ConfigError(ValueError):
    """A setting has a value that cannot be used."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _optional_seconds(env: Mapping[str, str], name: str) -> float | None:
    """Seconds (0 or more), or None when the variable is unset or empty."""
    return _seconds(env, name, -1.0) if env.get(name, "").strip() else None


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (the first is the default)."""
    value = env.get(name, "").strip().lower() or choices[0]
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def docker_link_url(env: Mapping[str, str]) -> str | None:
    """DATABASE_URL as the original's docker-link variables give it, None if none is set:
    `mysql+mysqldb://USER:PASSWORD@ADDR:PORT/NAME`, each missing part as the original had it."""
    if not any(env.get(name, "").strip() for name in LINK_VARIABLES):
        return None
    given = {name: env.get(name, "").strip() or default for name, default in LINK_VARIABLES.items()}
    port = given["MYSQL_PORT_3306_TCP_PORT"]
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"MYSQL_PORT_3306_TCP_PORT must be a port number, got {port!r}")
    url = sa.URL.create(
        "mysql+mysqldb",
        username=given["MYSQL_ENV_MYSQL_USER"],
        password=given["MYSQL_ENV_MYSQL_PASSWORD"] or None,
        host=given["MYSQL_PORT_3306_TCP_ADDR"],
        port=int(port),
        database=given["MYSQL_DATABASE_NAME"],
    )
    return url.render_as_string(hide_password=False)


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in env.get(name, "").split(",") if item.strip())


def _queue_caps(env: Mapping[str, str], name: str) -> tuple[tuple[str, int], ...]:
    """`reports=2,deploy=1`: the most running jobs of each named queue (API.md section 6)."""
    caps: dict[str, int] = {}
    for item in _list(env, name):
        queue, sep, raw = item.partition("=")
        queue, raw = queue.strip(), raw.strip()
        if not sep or not QUEUE_NAME_PATTERN.fullmatch(queue):
            raise ConfigError(f"{name} entries are queue=limit, got {item!r}")
        if not raw.isdigit() or int(raw) < 1:
            raise ConfigError(f"{name}: the limit of {queue} must be an integer >= 1, got {raw!r}")
        caps[queue] = int(raw)
    return tuple(sorted(caps.items()))


@dataclass(frozen=True)
class Settings:
    """Every knob of the service, with the defaults a fresh install runs with."""

    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)  # may hold a password
    #: True when DATABASE_URL was unset and built from the docker-link variables (said at start)
    database_url_from_link: bool = False
    redis_url: str = field(default=DEFAULT_REDIS_URL, repr=False)
    #: prefix of every Redis key and channel; empty: this deployment's own (service.deployment)
    redis_namespace: str = ""
    job_home: Path = field(default_factory=Path.cwd)
    host: str = "127.0.0.1"
    port: int = 8000
    web_concurrency: int = 2
    worker_processes: int = 2
    worker_threads: int = 8
    #: queues a worker serves; empty means every queue, including ones created later
    worker_queues: tuple[str, ...] = ()

    default_timeout: int = 3600
    max_timeout: int = 7 * 24 * 3600
    default_max_retries: int = 0
    max_retries_limit: int = 100
    retry_backoff: float = 10.0
    retry_backoff_max: float = 3600.0
    #: `exponential` (retry_backoff, doubling, capped) or `delayed_job` (attempts^4 + 5 s)
    retry_schedule: str = "exponential"
    kill_grace: float = 5.0
    output_limit: int = 1024 * 1024
    max_body_size: int = 1024 * 1024
    max_command_length: int = 64 * 1024
    max_env_size: int = 64 * 1024

    heartbeat_interval: float = 2.0
    #: a worker silent this long is declared lost (actors/presence.py: the timing argument)
    lease_timeout: float = 15.0
    sweep_interval: float = 1.0
    shutdown_grace: float = 30.0
    retention: float = 7 * 24 * 3600.0
    #: by outcome (JOBRUNNER_RETENTION_SUCCEEDED, ...); None: `retention`
    retention_succeeded: float | None = None
    retention_failed: float | None = None
    retention_cancelled: float | None = None

    #: PATH of job commands; JOB_HOME/bin comes first
    job_path: str = "/usr/local/bin:/usr/bin:/bin"
    #: names of worker environment variables passed on to job commands
    pass_env: tuple[str, ...] = ()
    #: tokens accepted besides those in the database, as written in JOBRUNNER_API_TOKENS:
    #: `scope:token` or a bare (admin) token (service.scopes; never shown: repr=False)
    api_tokens: tuple[str, ...] = field(default=(), repr=False)
    #: False only when JOBRUNNER_AUTH=off: every endpoint open, loudly logged
    auth_enabled: bool = True
    #: without authentication, the Host names served besides the listen address and loopback
    allowed_hosts: tuple[str, ...] = ()
    #: patterns of the programs a job may run; empty means any program
    allowed_commands: tuple[str, ...] = ()
    #: how many distinct queues may hold jobs that are not final at once (0: no limit)
    max_queues: int = 1000
    #: patterns of the queue names jobs may use; empty means any valid name
    allowed_queues: tuple[str, ...] = ()
    #: JOBRUNNER_QUEUE_CONCURRENCY: (queue, most running jobs at once across every worker)
    queue_concurrency: tuple[tuple[str, int], ...] = ()
    #: patterns of the env names a job may set when a command policy is on; empty means none
    #: (see service.policy)
    allowed_env: tuple[str, ...] = ()
    #: `refuse`: an unknown job field is a 422; `ignore`: dropped, as the original's strong
    #: parameters did
    unknown_fields: str = "refuse"
    #: which machine this is, for telling whether a pid of another worker is alive; empty: the
    #: kernel's boot id and this pid namespace (service.workers.machine)
    machine_id: str = ""
    #: the user job commands run as (service.job_user); empty: the worker's own
    job_user: str = ""
    #: how a worker keeps what a command starts within its job: auto, cgroup or subreaper
    #: (actors/containment.py)
    containment: str = "auto"
    log_format: str = "console"
    log_level: str = "info"
    startup_timeout: float = 10.0
    #: how long a client may take to send a request's headers, then its body, and how long a
    #: connection may stay idle between requests (service.web.server)
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: int = 5
    #: the key that signs the dashboard's session cookies; empty: the deployment's own, made
    #: by the migrations (table web_secrets), so every web process agrees (never shown)
    session_secret: str = field(default="", repr=False)
    #: how long a dashboard sign-in lasts, in seconds
    session_max_age: float = 12 * 3600.0

    #: completion callbacks (API.md section 8): a URL that gets the events of every job
    callback_url: str = ""
    #: `whsec_...` secrets, the first signs and every one is used during a rotation
    callback_secrets: tuple[str, ...] = field(default=(), repr=False)
    #: the first retry's delay; each later one is 5 times longer, capped at 10 hours
    callback_backoff: float = 5.0
    callback_attempts: int = 8
    #: addresses, CIDR ranges and host names that callbacks may reach though refused by default
    callback_allow: tuple[str, ...] = ()
    callback_timeout: float = 10.0
    #: deliveries at once to one destination (scheme, host, port)
    callback_concurrency: int = 4

    def queue_cap(self, queue: str) -> int | None:
        """The most jobs of `queue` that may run at once (JOBRUNNER_QUEUE_CONCURRENCY)."""
        return self.queue_caps.get(queue)

    @cached_property
    def queue_caps(self) -> dict[str, int]:
        return dict(self.queue_concurrency)

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            base=self.retry_backoff,
            cap=self.retry_backoff_max,
            delayed_job=self.retry_schedule == "delayed_job",
        )

    @property
    def retention_policy(self) -> Retention:
        """How long final jobs are kept, by how they ended (API.md section 10)."""

        def kept(value: float | None) -> float:
            return self.retention if value is None else value

        return Retention(
            succeeded=kept(self.retention_succeeded),
            failed=kept(self.retention_failed),
            cancelled=kept(self.retention_cancelled),
        )

    @cached_property
    def callback_allow_list(self) -> AllowList:
        """JOBRUNNER_CALLBACK_ALLOW, parsed (checked by from_environ)."""
        from service.destinations import AllowList

        return AllowList.parse(self.callback_allow)

    @cached_property
    def command_policy(self) -> CommandPolicy:
        return CommandPolicy.from_patterns(self.allowed_commands, self.allowed_env)

    @property
    def callbacks_enabled(self) -> bool:
        """Whether events can be signed (a job may ask for a callback)."""
        return bool(self.callback_secrets)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def uses_stub_broker(self) -> bool:
        return self.redis_url.startswith("stub:")

    @classmethod
    def from_environ(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables; raise ConfigError on a bad value."""
        env = os.environ if env is None else env
        job_home = Path(env.get("JOB_HOME") or Path.cwd()).expanduser().resolve()
        queues = _list(env, "WORKER_QUEUES")
        for queue in queues:
            if not QUEUE_NAME_PATTERN.fullmatch(queue):
                raise ConfigError(f"WORKER_QUEUES holds an invalid queue name: {queue!r}")
        log_format = env.get("JOBRUNNER_LOG_FORMAT", "console").strip() or "console"
        if log_format not in ("console", "json"):
            raise ConfigError(f"JOBRUNNER_LOG_FORMAT must be console or json, got {log_format!r}")
        auth = (env.get("JOBRUNNER_AUTH", "").strip() or "on").lower()
        if auth not in ("on", "off"):
            raise ConfigError(f"JOBRUNNER_AUTH must be on or off, got {auth!r}")
        link_url = None if env.get("DATABASE_URL", "").strip() else docker_link_url(env)
        settings = cls(
            database_url=env.get("DATABASE_URL", "").strip() or link_url or DEFAULT_DATABASE_URL,
            database_url_from_link=link_url is not None,
            redis_url=env.get("REDIS_URL", "").strip() or DEFAULT_REDIS_URL,
            redis_namespace=env.get("JOBRUNNER_REDIS_NAMESPACE", "").strip(),
            job_home=job_home,
            host=env.get("HOST", "").strip() or "127.0.0.1",
            port=_int(env, "PORT", 8000, minimum=1),
            web_concurrency=_int(env, "WEB_CONCURRENCY", 2, minimum=1),
            worker_processes=_int(env, "WORKER_PROCESSES", 2, minimum=1),
            worker_threads=_int(env, "WORKER_THREADS", 8, minimum=1),
            worker_queues=queues,
            default_timeout=_int(env, "JOBRUNNER_DEFAULT_TIMEOUT", 3600, minimum=1),
            max_timeout=_int(env, "JOBRUNNER_MAX_TIMEOUT", 7 * 24 * 3600, minimum=1),
            default_max_retries=_int(env, "JOBRUNNER_DEFAULT_MAX_RETRIES", 0),
            retry_backoff=_seconds(env, "JOBRUNNER_RETRY_BACKOFF", 10.0),
            retry_backoff_max=_seconds(env, "JOBRUNNER_RETRY_BACKOFF_MAX", 3600.0),
            retry_schedule=_choice(env, "JOBRUNNER_RETRY_SCHEDULE", ("exponential", "delayed_job")),
            kill_grace=_seconds(env, "JOBRUNNER_KILL_GRACE", 5.0),
            output_limit=_int(env, "JOBRUNNER_OUTPUT_LIMIT", 1024 * 1024, minimum=1024),
            max_body_size=_int(env, "JOBRUNNER_MAX_BODY_SIZE", 1024 * 1024, minimum=1024),
            heartbeat_interval=_seconds(env, "JOBRUNNER_HEARTBEAT_INTERVAL", 2.0, minimum=0.05),
            lease_timeout=_seconds(env, "JOBRUNNER_LEASE_TIMEOUT", 15.0, minimum=0.5),
            sweep_interval=_seconds(env, "JOBRUNNER_SWEEP_INTERVAL", 1.0, minimum=0.05),
            shutdown_grace=_seconds(env, "JOBRUNNER_SHUTDOWN_GRACE", 30.0),
            retention=_seconds(env, "JOBRUNNER_RETENTION", 7 * 24 * 3600.0),
            retention_succeeded=_optional_seconds(env, "JOBRUNNER_RETENTION_SUCCEEDED"),
            retention_failed=_optional_seconds(env, "JOBRUNNER_RETENTION_FAILED"),
            retention_cancelled=_optional_seconds(env, "JOBRUNNER_RETENTION_CANCELLED"),
            job_path=env.get("JOBRUNNER_JOB_PATH", "").strip() or "/usr/local/bin:/usr/bin:/bin",
            pass_env=_list(env, "JOBRUNNER_PASS_ENV"),
            api_tokens=_list(env, "JOBRUNNER_API_TOKENS"),
            auth_enabled=auth == "on",
            allowed_hosts=tuple(host.lower() for host in _list(env, "JOBRUNNER_ALLOWED_HOSTS")),
            allowed_commands=_list(env, "JOBRUNNER_ALLOWED_COMMANDS"),
            allowed_env=_list(env, "JOBRUNNER_ALLOWED_ENV"),
            max_queues=_int(env, "JOBRUNNER_MAX_QUEUES", 1000),
            allowed_queues=_list(env, "JOBRUNNER_ALLOWED_QUEUES"),
            queue_concurrency=_queue_caps(env, "JOBRUNNER_QUEUE_CONCURRENCY"),
            unknown_fields=_choice(env, "JOBRUNNER_UNKNOWN_FIELDS", ("refuse", "ignore")),
            machine_id=env.get("JOBRUNNER_MACHINE_ID", "").strip(),
            containment=_choice(env, "JOBRUNNER_CONTAINMENT", ("auto", "cgroup", "subreaper")),
            job_user=env.get("JOBRUNNER_JOB_USER", "").strip(),
            log_format=log_format,
            log_level=(env.get("JOBRUNNER_LOG_LEVEL", "").strip() or "info").lower(),
            startup_timeout=_seconds(env, "JOBRUNNER_STARTUP_TIMEOUT", 10.0),
            header_timeout=_seconds(env, "JOBRUNNER_HEADER_TIMEOUT", 10.0, minimum=0.1),
            body_timeout=_seconds(env, "JOBRUNNER_BODY_TIMEOUT", 30.0, minimum=0.1),
            keepalive_timeout=_int(env, "JOBRUNNER_KEEPALIVE_TIMEOUT", 5, minimum=1),
            callback_url=env.get("JOBRUNNER_CALLBACK_URL", "").strip(),
            callback_secrets=tuple(env.get("JOBRUNNER_CALLBACK_SECRET", "").split()),
            callback_backoff=_seconds(env, "JOBRUNNER_CALLBACK_BACKOFF", 5.0, minimum=0.01),
            callback_attempts=_int(env, "JOBRUNNER_CALLBACK_ATTEMPTS", 8, minimum=1),
            callback_allow=_list(env, "JOBRUNNER_CALLBACK_ALLOW"),
            callback_timeout=_seconds(env, "JOBRUNNER_CALLBACK_TIMEOUT", 10.0, minimum=0.1),
            callback_concurrency=_int(env, "JOBRUNNER_CALLBACK_CONCURRENCY", 4, minimum=1),
            session_secret=env.get("JOBRUNNER_SESSION_SECRET", "").strip(),
            session_max_age=_seconds(env, "JOBRUNNER_SESSION_MAX_AGE", 12 * 3600.0, minimum=60),
        )
        _check_callbacks(settings)
        for entry in settings.api_tokens:
            try:
                parse_entry(entry)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if settings.default_timeout > settings.max_timeout:
            raise ConfigError("JOBRUNNER_DEFAULT_TIMEOUT must not exceed JOBRUNNER_MAX_TIMEOUT")
        if settings.heartbeat_interval * 4 > settings.lease_timeout:
            # a worker stops its commands after half a lease without a confirmation: that must
            # be more than one missed renewal (actors/presence.py)
            raise ConfigError(
                "JOBRUNNER_LEASE_TIMEOUT must be at least 4 heartbeat intervals "
                f"({settings.heartbeat_interval * 4:g} s)"
            )
        return settings


def _check_callbacks(settings: Settings) -> None:
    """The callback settings can be used: secrets are `whsec_` + base64, the URL may be called,
    and a URL has a secret to sign with."""
    from service import callbacks, destinations  # service.callbacks reads Settings

    for secret in settings.callback_secrets:
        try:
            callbacks.secret_key(secret)
        except ValueError as exc:
            raise ConfigError(f"JOBRUNNER_CALLBACK_SECRET: {exc}") from None
    try:
        allow = destinations.AllowList.parse(settings.callback_allow)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if settings.callback_url:
        if not settings.callback_secrets:
            raise ConfigError("JOBRUNNER_CALLBACK_URL needs JOBRUNNER_CALLBACK_SECRET to sign with")
        try:
            destinations.check_url(settings.callback_url, allow)
        except destinations.Refused as exc:
            raise ConfigError(f"JOBRUNNER_CALLBACK_URL {exc}") from None
