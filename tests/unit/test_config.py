from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from service.config import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, ConfigError, Settings
from service.states import Retention


def test_defaults_without_any_variable() -> None:
    settings = Settings.from_environ({})
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.redis_url == DEFAULT_REDIS_URL
    assert settings.port == 8000
    assert settings.job_home == Path.cwd().resolve()
    assert settings.default_max_retries == 0


def test_the_public_names() -> None:
    settings = Settings.from_environ(
        {
            "DATABASE_URL": "mysql+mysqldb://u:p@db/x",
            "REDIS_URL": "redis://r:6379/2",
            "JOB_HOME": "/srv/jobs",
            "PORT": "9000",
            "WORKER_PROCESSES": "3",
            "WORKER_THREADS": "5",
            "WORKER_QUEUES": "default, reports",
        }
    )
    assert (settings.port, settings.worker_processes, settings.worker_threads) == (9000, 3, 5)
    assert settings.job_home == Path("/srv/jobs")
    assert settings.worker_queues == ("default", "reports")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "http"),
        ("WORKER_THREADS", "0"),
        ("WORKER_QUEUES", "a b"),
        ("JOBRUNNER_KILL_GRACE", "x"),
    ],
)
def test_bad_values_say_which_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_environ({name: value})


LINK = {
    "MYSQL_PORT_3306_TCP_ADDR": "172.17.0.2",
    "MYSQL_PORT_3306_TCP_PORT": "3307",
    "MYSQL_DATABASE_NAME": "jobs_db",
    "MYSQL_ENV_MYSQL_USER": "runner",
    "MYSQL_ENV_MYSQL_PASSWORD": "p@ss/w:rd %",
}


def test_the_database_from_the_originals_docker_link_variables() -> None:
    settings = Settings.from_environ(LINK)
    assert settings.database_url_from_link
    url = sa.make_url(settings.database_url)
    assert (url.drivername, url.host, url.port, url.database) == (
        "mysql+mysqldb",
        "172.17.0.2",
        3307,
        "jobs_db",
    )
    assert (url.username, url.password) == ("runner", "p@ss/w:rd %")  # quoted, and back


def test_missing_link_variables_default_as_the_original_did() -> None:
    url = sa.make_url(Settings.from_environ({"MYSQL_PORT_3306_TCP_ADDR": "db"}).database_url)
    assert (url.host, url.port, url.database, url.username, url.password) == (
        "db",
        3306,
        "http_job_runner_production",
        "root",
        None,
    )


def test_database_url_wins_over_the_link_variables() -> None:
    settings = Settings.from_environ({**LINK, "DATABASE_URL": "mysql+mysqldb://u@h/x"})
    assert settings.database_url == "mysql+mysqldb://u@h/x"
    assert not settings.database_url_from_link
    assert not Settings.from_environ({}).database_url_from_link
    with pytest.raises(ConfigError, match="MYSQL_PORT_3306_TCP_PORT"):
        Settings.from_environ({**LINK, "MYSQL_PORT_3306_TCP_PORT": "tcp://x"})


def test_retention_by_outcome_defaults_to_the_retention() -> None:
    assert Settings.from_environ({}).retention_policy == Retention(604800, 604800, 604800)
    settings = Settings.from_environ(
        {"JOBRUNNER_RETENTION": "3600", "JOBRUNNER_RETENTION_SUCCEEDED": "0"}
    )
    assert settings.retention_policy == Retention(succeeded=0, failed=3600, cancelled=3600)
    with pytest.raises(ConfigError, match="JOBRUNNER_RETENTION_FAILED"):
        Settings.from_environ({"JOBRUNNER_RETENTION_FAILED": "-1"})


def test_scoped_api_tokens_and_an_unknown_scope() -> None:
    settings = Settings.from_environ({"JOBRUNNER_API_TOKENS": "read:jr_a, submit:jr_b ,jr_c"})
    assert settings.api_tokens == ("read:jr_a", "submit:jr_b", "jr_c")
    for entry in ("reed:jr_a", "read:", "Admin:jr_x"):
        with pytest.raises(ConfigError, match="JOBRUNNER_API_TOKENS"):
            Settings.from_environ({"JOBRUNNER_API_TOKENS": entry})


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("JOBRUNNER_UNKNOWN_FIELDS", "ignore", "drop"),
        ("JOBRUNNER_RETRY_SCHEDULE", "delayed_job", "fibonacci"),
    ],
)
def test_choices(name: str, good: str, bad: str) -> None:
    Settings.from_environ({name: good})
    with pytest.raises(ConfigError, match=name):
        Settings.from_environ({name: bad})


def test_the_originals_retry_schedule() -> None:
    policy = Settings.from_environ({"JOBRUNNER_RETRY_SCHEDULE": "delayed_job"}).retry_policy
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [6, 21, 86, 261]
    days = sum(policy.delay(n) for n in range(1, 25)) / 86400  # 24 waits between 25 attempts
    assert 20 < days < 21
