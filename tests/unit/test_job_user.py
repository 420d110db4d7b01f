"""The job user's rules that need no second user: who may be one."""

from __future__ import annotations

import os

import pytest

from service.job_user import JobUser, JobUserError, can_switch_to, resolve


def test_the_workers_own_user_is_refused() -> None:
    me = JobUser("me", os.geteuid(), os.getegid(), "/")
    with pytest.raises(JobUserError, match="the worker's own user"):
        can_switch_to(me)


def test_root_is_refused_by_name_and_by_number() -> None:
    for spec in ("root", "0"):
        with pytest.raises(JobUserError, match="must not be root"):
            resolve(spec)


def test_a_numeric_uid_names_its_user() -> None:
    assert resolve("65534").uid == 65534
