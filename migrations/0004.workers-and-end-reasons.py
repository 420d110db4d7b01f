"""The worker registry, and how each attempt ended as data (end_reason, exit_signal).

`workers`: one row per live worker process, renewed every few seconds with the database's own
clock (actors/presence.py): the sweeper declares the attempts of a worker whose row is older
than the lease lost at once. `boot` tells machines (and pid namespaces) apart, and
`started_ticks` (the process's start time in /proc, in clock ticks) tells a reused pid from
the worker that had it.

Re-runnable (see 0001): the table is created if missing, the columns added if missing
(MariaDB adds a nullable column at the end of a table in place, without copying it).
"""

from yoyo import step

__depends__ = {"0003.add-list-indexes"}

MYSQL_WORKERS = """
CREATE TABLE IF NOT EXISTS workers (
  name VARCHAR(255) NOT NULL,
  host VARCHAR(255) NOT NULL,
  pid INT NOT NULL,
  boot VARCHAR(100) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  started_ticks BIGINT NOT NULL,
  queues JSON NULL,
  started_at DATETIME(6) NOT NULL,
  last_seen_at DATETIME(6) NOT NULL,
  PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci
"""
MYSQL_COLUMNS = [
    "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS end_reason VARCHAR(16) CHARACTER SET ascii "
    "COLLATE ascii_bin NULL",
    "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS exit_signal INT NULL",
]

SQLITE_WORKERS = """
CREATE TABLE IF NOT EXISTS workers (
  name TEXT NOT NULL PRIMARY KEY,
  host TEXT NOT NULL,
  pid INTEGER NOT NULL,
  boot TEXT NOT NULL,
  started_ticks INTEGER NOT NULL,
  queues TEXT NULL,
  started_at DATETIME NOT NULL,
  last_seen_at DATETIME NOT NULL
)
"""
SQLITE_COLUMNS = {"end_reason": "TEXT NULL", "exit_signal": "INTEGER NULL"}


def apply(conn):
    cursor = conn.cursor()
    try:
        if type(conn).__module__.startswith("sqlite3"):
            cursor.execute(SQLITE_WORKERS)
            cursor.execute("PRAGMA table_info(jobs)")
            present = {row[1] for row in cursor.fetchall()}
            for name, kind in SQLITE_COLUMNS.items():
                if name not in present:
                    cursor.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
        else:
            cursor.execute(MYSQL_WORKERS)
            for statement in MYSQL_COLUMNS:
                cursor.execute(statement)
    finally:
        cursor.close()


def rollback(conn):
    cursor = conn.cursor()
    try:
        cursor.execute("DROP TABLE IF EXISTS workers")
        cursor.execute("ALTER TABLE jobs DROP COLUMN exit_signal")
        cursor.execute("ALTER TABLE jobs DROP COLUMN end_reason")
    finally:
        cursor.close()


steps = [step(apply, rollback)]
