"""A scope for each API token (read, submit or admin: service.scopes); the tokens created
before scopes existed could do everything, so they are admin.

Portable between MySQL/MariaDB and SQLite, re-runnable: the column is added only if it is
missing (MySQL has no ADD COLUMN IF NOT EXISTS; see 0001 for why every step must be).
"""

from yoyo import step

__depends__ = {"0004.workers-and-end-reasons"}

MYSQL = (
    "ALTER TABLE api_tokens ADD COLUMN scope VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin "
    "NOT NULL DEFAULT 'admin'"
)
SQLITE = "ALTER TABLE api_tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'admin'"


def _has_scope(cursor, sqlite):
    if sqlite:
        cursor.execute("PRAGMA table_info(api_tokens)")
        return any(row[1] == "scope" for row in cursor.fetchall())
    cursor.execute(
        "SELECT COUNT(*) FROM information_schema.columns "
        "WHERE table_schema = DATABASE() AND table_name = 'api_tokens' AND column_name = 'scope'"
    )
    return cursor.fetchone()[0] > 0


def apply(conn):
    sqlite = type(conn).__module__.startswith("sqlite3")
    cursor = conn.cursor()
    try:
        if not _has_scope(cursor, sqlite):
            cursor.execute(SQLITE if sqlite else MYSQL)
    finally:
        cursor.close()


def rollback(conn):
    cursor = conn.cursor()
    try:
        cursor.execute("ALTER TABLE api_tokens DROP COLUMN scope")
    finally:
        cursor.close()


steps = [step(apply, rollback)]
