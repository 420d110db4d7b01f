from __future__ import annotations

from pathlib import Path

import pytest

from service.config import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, ConfigError, Settings


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
