"""The dashboard: pages for people under /ui (API.md section 12), server-rendered with Jinja2,
signed in with an API token, with the scope of that token. See docs/dashboard.md."""

from service.web.dashboard.errors import with_pages
from service.web.dashboard.routes import routes
from service.web.dashboard.session import PREFIX, DashboardSessions

__all__ = ["PREFIX", "DashboardSessions", "routes", "with_pages"]
