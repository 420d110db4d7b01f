"""Secrets that every web process of a deployment shares: the key that signs the dashboard's
session cookies (`session`), made once, at random, so that a cookie signed by one web process
is good in every other (service/web/dashboard/session.py). JOBRUNNER_SESSION_SECRET, when set,
is used instead.

Re-runnable (see 0001): the table is created if missing, the secret made if there is none.
"""

import secrets

from yoyo import step

__depends__ = {"0007.deployment-identity"}

MYSQL = """
CREATE TABLE IF NOT EXISTS web_secrets (
  name VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  value VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  created_at DATETIME(6) NOT NULL,
  PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci
"""
SQLITE = """
CREATE TABLE IF NOT EXISTS web_secrets (
  name TEXT NOT NULL PRIMARY KEY,
  value TEXT NOT NULL,
  created_at DATETIME NOT NULL
)
"""


def apply(conn):
    sqlite = type(conn).__module__.startswith("sqlite3")
    cursor = conn.cursor()
    try:
        cursor.execute(SQLITE if sqlite else MYSQL)
        placeholder = "?" if sqlite else "%s"
        cursor.execute(f"SELECT COUNT(*) FROM web_secrets WHERE name = {placeholder}", ("session",))
        if cursor.fetchone()[0] == 0:
            now = "strftime('%Y-%m-%d %H:%M:%f', 'now')" if sqlite else "UTC_TIMESTAMP(6)"
            cursor.execute(
                "INSERT INTO web_secrets (name, value, created_at) "
                f"VALUES ({placeholder}, {placeholder}, {now})",
                ("session", secrets.token_hex(32)),
            )
    finally:
        cursor.close()


def rollback(conn):
    cursor = conn.cursor()
    try:
        cursor.execute("DROP TABLE IF EXISTS web_secrets")
    finally:
        cursor.close()


steps = [step(apply, rollback)]
