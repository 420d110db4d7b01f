"""Schemathesis hooks for tests/integration/test_fuzz.py (loaded through SCHEMATHESIS_HOOKS).

A follow stream (`?follow=1`) lasts until its job is final, and fuzzed jobs mostly never run
(there is no worker, or their run_at is far ahead): the fuzzer reads the output without
following. tests/integration/test_follow.py tests following.
"""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.query and str(case.query.get("follow")).strip().lower() in ("1", "true"):
        case.query["follow"] = "0"
