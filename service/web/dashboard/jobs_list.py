"""The jobs list (`/ui/jobs`): newest first, the filters of `GET /jobs` (state, queue,
concurrency_key, schedule_id) and a search on the command, all in the URL; counts by state
(of the view's queue, key and schedule); pages by id (`after`). It never loads output, and
stays fast at any size: one indexed page, counts capped at queries.COUNT_CAP, and a search
that reads at most queries.SEARCH_WINDOW jobs per page.

`?rows=1` answers the table alone: the page's script fetches it every few seconds to refresh
itself while jobs move (without JavaScript, the page is the same, refreshed by hand).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlencode

from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from service import queries
from service.config import QUEUE_NAME_PATTERN
from service.db import transaction
from service.queries import Job, ListFilter
from service.states import State
from service.web.dashboard.render import page

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_ID = 2**63 - 1
MAX_SEARCH = 200
#: the query parameters that make a view (kept in every link of the page)
VIEW_PARAMS = ("state", "queue", "concurrency_key", "schedule_id", "q", "order", "limit")


@dataclass
class View:
    """What the URL asks for, checked: bad values are dropped, and said so on the page."""

    state: str | None = None
    queue: str | None = None
    concurrency_key: str | None = None
    schedule_id: int | None = None
    q: str | None = None
    order: str = "desc"
    limit: int = PAGE_SIZE
    after: int | None = None
    problems: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, request: Request) -> View:
        params = request.query_params
        view = cls()
        state = params.get("state") or None
        if state is not None and state not in {s.value for s in State}:
            view.problems.append(f"no state {state!r}")
            state = None
        view.state = state
        queue = params.get("queue") or None
        if queue is not None and not QUEUE_NAME_PATTERN.fullmatch(queue):
            view.problems.append("that is not a valid queue name")
            queue = None
        view.queue = queue
        key = params.get("concurrency_key") or None
        if key is not None and not QUEUE_NAME_PATTERN.fullmatch(key):  # as GET /jobs checks it
            view.problems.append("that is not a valid concurrency key")
            key = None
        view.concurrency_key = key
        raw_schedule = params.get("schedule_id") or None
        view.schedule_id = _number(raw_schedule, 1, MAX_ID)
        if raw_schedule is not None and view.schedule_id is None:
            view.problems.append("schedule_id must be an integer from 1")
        q = (params.get("q") or "").strip()
        view.q = q[:MAX_SEARCH] or None
        view.order = "asc" if params.get("order") == "asc" else "desc"
        view.limit = _number(params.get("limit"), 1, MAX_PAGE_SIZE) or PAGE_SIZE
        view.after = _number(params.get("after"), 0, MAX_ID)
        return view

    @property
    def filter(self) -> ListFilter:
        return ListFilter(
            state=self.state,
            queue=self.queue,
            concurrency_key=self.concurrency_key,
            schedule_id=self.schedule_id,
            after=self.after,
            limit=self.limit,
            descending=self.order == "desc",
        )

    def link(self, **changes: str | int | None) -> str:
        """This view's URL, with some parameters changed (None removes one)."""
        values: dict[str, str | int | None] = {name: getattr(self, name) for name in VIEW_PARAMS}
        values.update(changes)
        if values.get("order") == "desc":
            values["order"] = None
        if values.get("limit") == PAGE_SIZE:
            values["limit"] = None
        query = {name: value for name, value in values.items() if value not in (None, "")}
        return "/ui/jobs" + (f"?{urlencode(query)}" if query else "")


def _number(raw: str | None, low: int, high: int) -> int | None:
    if raw is None or not re.fullmatch(r"\d{1,19}", raw) or not low <= int(raw) <= high:
        return None
    return int(raw)


@dataclass(frozen=True)
class Listing:
    jobs: list[Job]
    next_after: int | None
    counts: dict[str, int] | None
    searched_to: int | None


def listing(engine: Engine, view: View) -> Listing:
    with transaction(engine) as conn:
        if view.q is not None:
            found = queries.search_jobs(conn, view.filter, view.q)
            return Listing(found.jobs, found.next_after, None, found.searched_to)
        page_jobs, more = queries.list_jobs(conn, view.filter)
        counts = queries.capped_counts(conn, view.queue, within=view.filter)
    next_after = page_jobs[-1].id if more and page_jobs else None
    return Listing(page_jobs, next_after, counts, None)


def _jump(request: Request) -> Response | None:
    """The "id" box: straight to that job's page."""
    raw = (request.query_params.get("id") or "").strip().lstrip("#")
    if raw and _number(raw, 1, MAX_ID) is not None:
        return RedirectResponse(f"/ui/jobs/{int(raw)}", status_code=303)
    return None


async def jobs_page(request: Request) -> Response:
    jump = _jump(request)
    if jump is not None:
        return jump
    view = View.of(request)
    found = await run_in_threadpool(listing, request.state.services.engine, view)
    template = "_job_rows.html" if request.query_params.get("rows") == "1" else "jobs.html"
    return page(
        request,
        template,
        view=view,
        listing=found,
        states=[s.value for s in State],
        count_cap=queries.COUNT_CAP,
    )
