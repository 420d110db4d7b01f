"""Token scopes (API.md section 9): what a token may do.

`read` may read (GET, HEAD); `submit` may read, create jobs, and cancel and retry any job;
`admin` may do everything (edits, deletes, and whatever later routes need it). Each scope
includes the ones before it. Every route declares the scope each of its methods needs
(service.web.access); a token outside it gets 403.

`JOBRUNNER_API_TOKENS` entries are `scope:token`, or a bare token, which is `admin` (as every
token was before scopes existed).
"""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    READ = "read"
    SUBMIT = "submit"
    ADMIN = "admin"

    def allows(self, needed: Scope) -> bool:
        """Whether a token of this scope may do what needs `needed`."""
        return _RANK[self] >= _RANK[needed]


_RANK = {Scope.READ: 0, Scope.SUBMIT: 1, Scope.ADMIN: 2}
#: the scope of a token written without one (JOBRUNNER_API_TOKENS, `jobrunner token create`)
DEFAULT_SCOPE = Scope.ADMIN


def parse_entry(entry: str) -> tuple[Scope, str]:
    """One JOBRUNNER_API_TOKENS entry: `scope:token` or a bare token (admin). ValueError for
    a prefix that is no scope, rather than taking `reed:tok` for an admin token."""
    prefix, colon, token = entry.partition(":")
    if not colon:
        return DEFAULT_SCOPE, entry
    try:
        scope = Scope(prefix)
    except ValueError:
        raise ValueError(
            f"a JOBRUNNER_API_TOKENS entry starts with {prefix[:20]!r}, which is no scope: "
            f"write scope:token with one of {', '.join(Scope)} (a bare token is admin)"
        ) from None
    if not token:
        raise ValueError(f"a JOBRUNNER_API_TOKENS entry {prefix}: has no token after the colon")
    return scope, token
