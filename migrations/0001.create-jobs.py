"""Create the jobs table and its indexes.

One migration serves MySQL/MariaDB and SQLite (the embedded trial mode): the DDL is picked by
the driver of the connection yoyo hands in. Every statement is re-runnable, because MySQL DDL
is not transactional and a crash between a statement and yoyo's bookkeeping re-runs it.
"""

from yoyo import step

MYSQL = """
CREATE TABLE IF NOT EXISTS jobs (
  id BIGINT NOT NULL AUTO_INCREMENT,
  command MEDIUMTEXT NOT NULL,
  argv JSON NULL,
  env JSON NULL,
  queue VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  priority INT NOT NULL DEFAULT 0,
  state VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  attempts INT NOT NULL DEFAULT 0,
  max_retries INT NOT NULL DEFAULT 0,
  timeout INT NOT NULL,
  exit_code INT NULL,
  last_error TEXT NULL,
  run_at DATETIME(6) NOT NULL,
  locked_at DATETIME(6) NULL,
  locked_by VARCHAR(255) NULL,
  heartbeat_at DATETIME(6) NULL,
  cancel_requested_at DATETIME(6) NULL,
  started_at DATETIME(6) NULL,
  finished_at DATETIME(6) NULL,
  failed_at DATETIME(6) NULL,
  created_at DATETIME(6) NOT NULL,
  updated_at DATETIME(6) NOT NULL,
  lease BIGINT NOT NULL DEFAULT 0,
  idempotency_key VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NULL,
  output MEDIUMBLOB NULL,
  output_offset BIGINT NOT NULL DEFAULT 0,
  output_bytes BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (id),
  UNIQUE KEY uq_jobs_idempotency_key (idempotency_key),
  KEY ix_jobs_claim (queue, state, priority, run_at, id),
  KEY ix_jobs_state_run_at (state, run_at),
  KEY ix_jobs_state_id (state, id),
  KEY ix_jobs_queue_id (queue, id),
  KEY ix_jobs_finished_at (finished_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci
"""

SQLITE = [
    """
    CREATE TABLE IF NOT EXISTS jobs (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      command TEXT NOT NULL,
      argv TEXT NULL,
      env TEXT NULL,
      queue TEXT NOT NULL,
      priority INTEGER NOT NULL DEFAULT 0,
      state TEXT NOT NULL,
      attempts INTEGER NOT NULL DEFAULT 0,
      max_retries INTEGER NOT NULL DEFAULT 0,
      timeout INTEGER NOT NULL,
      exit_code INTEGER NULL,
      last_error TEXT NULL,
      run_at DATETIME NOT NULL,
      locked_at DATETIME NULL,
      locked_by TEXT NULL,
      heartbeat_at DATETIME NULL,
      cancel_requested_at DATETIME NULL,
      started_at DATETIME NULL,
      finished_at DATETIME NULL,
      failed_at DATETIME NULL,
      created_at DATETIME NOT NULL,
      updated_at DATETIME NOT NULL,
      lease INTEGER NOT NULL DEFAULT 0,
      idempotency_key TEXT NULL,
      output BLOB NULL,
      output_offset INTEGER NOT NULL DEFAULT 0,
      output_bytes INTEGER NOT NULL DEFAULT 0
    )
    """,
    "CREATE UNIQUE INDEX IF NOT EXISTS uq_jobs_idempotency_key ON jobs (idempotency_key)",
    "CREATE INDEX IF NOT EXISTS ix_jobs_claim ON jobs (queue, state, priority, run_at, id)",
    "CREATE INDEX IF NOT EXISTS ix_jobs_state_run_at ON jobs (state, run_at)",
    "CREATE INDEX IF NOT EXISTS ix_jobs_state_id ON jobs (state, id)",
    "CREATE INDEX IF NOT EXISTS ix_jobs_queue_id ON jobs (queue, id)",
    "CREATE INDEX IF NOT EXISTS ix_jobs_finished_at ON jobs (finished_at)",
]


def apply(conn):
    statements = SQLITE if type(conn).__module__.startswith("sqlite3") else [MYSQL]
    cursor = conn.cursor()
    try:
        for statement in statements:
            cursor.execute(statement)
    finally:
        cursor.close()


def rollback(conn):
    cursor = conn.cursor()
    try:
        cursor.execute("DROP TABLE IF EXISTS jobs")
    finally:
        cursor.close()


steps = [step(apply, rollback)]
