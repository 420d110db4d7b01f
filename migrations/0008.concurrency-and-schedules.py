"""Concurrency keys, queue caps and schedules (API.md sections 6 and 7).

- `jobs.concurrency_key`, `jobs.concurrency_limit`: at most `limit` jobs of a key run at once.
- `jobs.held`: 1 while a queued job waits for a slot of its full key. The claim skips held
  jobs through its index (`ix_jobs_claim` now has `held` after `state`), so that any number
  of them cost the claim of other jobs nothing; the end of an attempt of the key releases
  the best one (service/jobs.py).
- `jobs.schedule_id`: the schedule that created the job (no foreign key: deleting a schedule
  keeps its jobs).
- `concurrency_locks`: one row per key or capped queue, locked by the claim while it counts
  the running jobs of that key or queue: two claims cannot both see room.
- `schedules`: a job template and when to create it next (`next_run_at`, moved by a guarded
  UPDATE at each tick: one job per tick, however many schedulers run).

Re-runnable (see 0001): tables created if missing, columns added if missing, the claim index
rebuilt only while it lacks `held`.
"""

from yoyo import step

__depends__ = {"0007.deployment-identity"}

MYSQL_COLUMNS = {
    "concurrency_key": "VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL",
    "concurrency_limit": "INT NULL",
    "held": "INT NOT NULL DEFAULT 0",
    "schedule_id": "BIGINT NULL",
}
SQLITE_COLUMNS = {
    "concurrency_key": "TEXT NULL",
    "concurrency_limit": "INTEGER NULL",
    "held": "INTEGER NOT NULL DEFAULT 0",
    "schedule_id": "INTEGER NULL",
}
CLAIM = "(queue, state, held, priority, run_at, id)"
KEY = "(concurrency_key, state, held, priority, run_at, id)"
SCHEDULE = "(schedule_id, id)"

MYSQL_TABLES = [
    """
    CREATE TABLE IF NOT EXISTS concurrency_locks (
      name VARCHAR(80) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
      PRIMARY KEY (name)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci
    """,
    """
    CREATE TABLE IF NOT EXISTS schedules (
      id BIGINT NOT NULL AUTO_INCREMENT,
      name VARCHAR(100) NOT NULL,
      cron VARCHAR(255) NULL,
      every INT NULL,
      timezone VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
      job JSON NOT NULL,
      enabled INT NOT NULL,
      overlap VARCHAR(8) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
      next_run_at DATETIME(6) NULL,
      last_run_at DATETIME(6) NULL,
      last_job_id BIGINT NULL,
      created_at DATETIME(6) NOT NULL,
      updated_at DATETIME(6) NOT NULL,
      PRIMARY KEY (id),
      UNIQUE KEY uq_schedules_name (name),
      KEY ix_schedules_next_run_at (next_run_at)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci
    """,
]
SQLITE_TABLES = [
    "CREATE TABLE IF NOT EXISTS concurrency_locks (name TEXT NOT NULL PRIMARY KEY)",
    """
    CREATE TABLE IF NOT EXISTS schedules (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      name TEXT NOT NULL,
      cron TEXT NULL,
      every INTEGER NULL,
      timezone TEXT NOT NULL,
      job TEXT NOT NULL,
      enabled INTEGER NOT NULL,
      overlap TEXT NOT NULL,
      next_run_at DATETIME NULL,
      last_run_at DATETIME NULL,
      last_job_id INTEGER NULL,
      created_at DATETIME NOT NULL,
      updated_at DATETIME NOT NULL
    )
    """,
    "CREATE UNIQUE INDEX IF NOT EXISTS uq_schedules_name ON schedules (name)",
    "CREATE INDEX IF NOT EXISTS ix_schedules_next_run_at ON schedules (next_run_at)",
]


def _columns(cursor, sqlite):
    if sqlite:
        cursor.execute("PRAGMA table_info(jobs)")
        return {row[1] for row in cursor.fetchall()}
    cursor.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = DATABASE() AND table_name = 'jobs'"
    )
    return {row[0] for row in cursor.fetchall()}


def _index_columns(cursor, sqlite, name):
    if sqlite:
        cursor.execute(f"PRAGMA index_info({name})")
        return [row[2] for row in sorted(cursor.fetchall())]
    cursor.execute(
        "SELECT column_name FROM information_schema.statistics WHERE table_schema = DATABASE() "
        "AND table_name = 'jobs' AND index_name = %s ORDER BY seq_in_index",
        (name,),
    )
    return [row[0] for row in cursor.fetchall()]


def apply(conn):
    sqlite = type(conn).__module__.startswith("sqlite3")
    cursor = conn.cursor()
    try:
        present = _columns(cursor, sqlite)
        kinds = SQLITE_COLUMNS if sqlite else MYSQL_COLUMNS
        for name, kind in kinds.items():
            if name not in present:
                cursor.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
        for statement in SQLITE_TABLES if sqlite else MYSQL_TABLES:
            cursor.execute(statement)
        has_held = "held" in _index_columns(cursor, sqlite, "ix_jobs_claim")
        if sqlite:
            if not has_held:
                cursor.execute("DROP INDEX IF EXISTS ix_jobs_claim")
                cursor.execute(f"CREATE INDEX ix_jobs_claim ON jobs {CLAIM}")
            cursor.execute(f"CREATE INDEX IF NOT EXISTS ix_jobs_key ON jobs {KEY}")
            cursor.execute(f"CREATE INDEX IF NOT EXISTS ix_jobs_schedule_id ON jobs {SCHEDULE}")
            return
        if not has_held:
            cursor.execute(
                f"ALTER TABLE jobs DROP INDEX ix_jobs_claim, ADD INDEX ix_jobs_claim {CLAIM}"
            )
        for name, columns in (("ix_jobs_key", KEY), ("ix_jobs_schedule_id", SCHEDULE)):
            if not _index_columns(cursor, sqlite, name):
                cursor.execute(f"ALTER TABLE jobs ADD INDEX {name} {columns}")
    finally:
        cursor.close()


def rollback(conn):
    cursor = conn.cursor()
    try:
        cursor.execute("DROP TABLE IF EXISTS schedules")
        cursor.execute("DROP TABLE IF EXISTS concurrency_locks")
        cursor.execute("ALTER TABLE jobs DROP INDEX ix_jobs_schedule_id")
        cursor.execute("ALTER TABLE jobs DROP INDEX ix_jobs_key")
        cursor.execute(
            "ALTER TABLE jobs DROP INDEX ix_jobs_claim, "
            "ADD INDEX ix_jobs_claim (queue, state, priority, run_at, id)"
        )
        for name in ("schedule_id", "held", "concurrency_limit", "concurrency_key"):
            cursor.execute(f"ALTER TABLE jobs DROP COLUMN {name}")
    finally:
        cursor.close()


steps = [step(apply, rollback)]
