"""The deployment's identity: a random id, made once, that names its Redis keys and channels.

Two deployments that share a Redis server (its pub/sub ignores database numbers) must not see
each other's notices, output or messages. Every process derives the default Redis namespace
from this id (service/deployment.py), so the operator need not think of it.

Re-runnable (see 0001): the table is created if missing, the id made if there is none.
"""

import uuid

from yoyo import step

__depends__ = {"0004.workers-and-end-reasons"}

MYSQL = """
CREATE TABLE IF NOT EXISTS deployment (
  id CHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  created_at DATETIME(6) NOT NULL,
  PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci
"""
SQLITE = """
CREATE TABLE IF NOT EXISTS deployment (
  id TEXT NOT NULL PRIMARY KEY,
  created_at DATETIME NOT NULL
)
"""


def apply(conn):
    sqlite = type(conn).__module__.startswith("sqlite3")
    cursor = conn.cursor()
    try:
        cursor.execute(SQLITE if sqlite else MYSQL)
        cursor.execute("SELECT COUNT(*) FROM deployment")
        if cursor.fetchone()[0] == 0:
            now = "strftime('%Y-%m-%d %H:%M:%f', 'now')" if sqlite else "UTC_TIMESTAMP(6)"
            placeholder = "?" if sqlite else "%s"
            cursor.execute(
                f"INSERT INTO deployment (id, created_at) VALUES ({placeholder}, {now})",
                (uuid.uuid4().hex,),
            )
    finally:
        cursor.close()


def rollback(conn):
    cursor = conn.cursor()
    try:
        cursor.execute("DROP TABLE IF EXISTS deployment")
    finally:
        cursor.close()


steps = [step(apply, rollback)]
