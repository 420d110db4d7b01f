"""Schemathesis hooks for tests/integration/test_fuzz.py (loaded through SCHEMATHESIS_HOOKS).

A follow stream (`?follow=1`) lasts until its job is final, and fuzzed jobs mostly never run
(there is no worker, or their run_at is far ahead): the fuzzer reads the output without
following. tests/integration/test_follow.py tests following.

A schedule's `cron` has the format `cron` in the document (5 fields cronsim reads: which
ranges and dates exist is more than a pattern can say); the fuzzer is told how to write one,
and a case it means to be valid that holds some other string (its coverage phase writes
strings of the longest length whatever the format) gets a valid expression instead.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import strategies as st


def _field(low: int, high: int) -> st.SearchStrategy[str]:
    number = st.integers(low, high)
    ranged = st.tuples(number, number).map(lambda p: f"{min(p)}-{max(p)}")
    item = st.one_of(st.just("*"), number.map(str), ranged)
    stepped = st.tuples(item, st.integers(1, 30)).map(lambda p: f"{p[0]}/{p[1]}")
    return st.lists(st.one_of(item, stepped), min_size=1, max_size=3).map(",".join)


#: 5 cron fields; the day of the month stays within 1-28 so that every month has it
CRON = st.tuples(_field(0, 59), _field(0, 23), _field(1, 28), _field(1, 12), _field(0, 7)).map(
    " ".join
)
schemathesis.openapi.format("cron", CRON)


def _is_cron(value: str) -> bool:
    from service.schedules import check_cron

    try:
        check_cron(value)
    except ValueError:
        return False
    return True


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.query and str(case.query.get("follow")).strip().lower() in ("1", "true"):
        case.query["follow"] = "0"
    positive = case.meta is not None and case.meta.generation.mode == "positive"
    body = case.body
    if positive and case.path.startswith("/schedules") and isinstance(body, dict):
        cron = body.get("cron")
        if isinstance(cron, str) and not _is_cron(cron):
            body["cron"] = "*/5 * * * *"
