"""Completion callbacks (API.md section 8): `callback_url` on jobs, the outbox of events and
the log of their delivery attempts.

`callback_events`: one row per event and destination, written in the transaction that makes
the job final (service.jobs), its body rendered there (the job may be deleted at once by a
retention of 0). The sender (actors/sender.py) claims due rows with a guarded UPDATE (`lease`)
and records each attempt in `callback_deliveries`. One secondary index on the outbox (every
ending job writes a row): due events, and (a done event's `next_attempt_at` is its end) old
ones to purge.

Re-runnable (see 0001): tables created if missing, the column added if missing.
"""

from yoyo import step

__depends__ = {"0007.deployment-identity"}

MYSQL = [
    "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS callback_url VARCHAR(2048) NULL",
    """
CREATE TABLE IF NOT EXISTS callback_events (
  id BIGINT NOT NULL AUTO_INCREMENT,
  event_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  job_id BIGINT NOT NULL,
  url VARCHAR(2048) NOT NULL,
  destination VARCHAR(300) NOT NULL,
  body LONGBLOB NOT NULL,
  state VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  attempts INT NOT NULL,
  lease BIGINT NOT NULL,
  next_attempt_at DATETIME(6) NOT NULL,
  created_at DATETIME(6) NOT NULL,
  finished_at DATETIME(6) NULL,
  PRIMARY KEY (id),
  KEY ix_callback_events_due (state, next_attempt_at, destination)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci
""",
    """
CREATE TABLE IF NOT EXISTS callback_deliveries (
  id BIGINT NOT NULL AUTO_INCREMENT,
  event_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  job_id BIGINT NOT NULL,
  url VARCHAR(2048) NOT NULL,
  attempt INT NOT NULL,
  at DATETIME(6) NOT NULL,
  status_code INT NULL,
  error TEXT NULL,
  next_attempt_at DATETIME(6) NULL,
  PRIMARY KEY (id),
  KEY ix_callback_deliveries_job (job_id, id),
  KEY ix_callback_deliveries_at (at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci
""",
]

SQLITE = [
    """
CREATE TABLE IF NOT EXISTS callback_events (
  id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  event_id TEXT NOT NULL,
  job_id INTEGER NOT NULL,
  url TEXT NOT NULL,
  destination TEXT NOT NULL,
  body BLOB NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL,
  lease INTEGER NOT NULL,
  next_attempt_at DATETIME NOT NULL,
  created_at DATETIME NOT NULL,
  finished_at DATETIME NULL
)
""",
    "CREATE INDEX IF NOT EXISTS ix_callback_events_due "
    "ON callback_events (state, next_attempt_at, destination)",
    """
CREATE TABLE IF NOT EXISTS callback_deliveries (
  id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  event_id TEXT NOT NULL,
  job_id INTEGER NOT NULL,
  url TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  at DATETIME NOT NULL,
  status_code INTEGER NULL,
  error TEXT NULL,
  next_attempt_at DATETIME NULL
)
""",
    "CREATE INDEX IF NOT EXISTS ix_callback_deliveries_job ON callback_deliveries (job_id, id)",
    "CREATE INDEX IF NOT EXISTS ix_callback_deliveries_at ON callback_deliveries (at)",
]


def apply(conn):
    sqlite = type(conn).__module__.startswith("sqlite3")
    cursor = conn.cursor()
    try:
        if sqlite:
            cursor.execute("PRAGMA table_info(jobs)")
            if not any(row[1] == "callback_url" for row in cursor.fetchall()):
                cursor.execute("ALTER TABLE jobs ADD COLUMN callback_url TEXT NULL")
            statements = SQLITE
        else:
            statements = MYSQL
        for statement in statements:
            cursor.execute(statement)
    finally:
        cursor.close()


def rollback(conn):
    cursor = conn.cursor()
    try:
        cursor.execute("DROP TABLE IF EXISTS callback_deliveries")
        cursor.execute("DROP TABLE IF EXISTS callback_events")
        cursor.execute("ALTER TABLE jobs DROP COLUMN callback_url")
    finally:
        cursor.close()


steps = [step(apply, rollback)]
