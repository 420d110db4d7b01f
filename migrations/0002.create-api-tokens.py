"""API tokens managed with `jobrunner token`: a name and the SHA-256 of the token, never the token.

Portable between MySQL/MariaDB and SQLite, re-runnable (see 0001).
"""

from yoyo import step

__depends__ = {"0001.create-jobs"}

MYSQL = """
CREATE TABLE IF NOT EXISTS api_tokens (
  id BIGINT NOT NULL AUTO_INCREMENT,
  name VARCHAR(100) NOT NULL,
  token_hash CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  created_at DATETIME(6) NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uq_api_tokens_name (name),
  UNIQUE KEY uq_api_tokens_hash (token_hash)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci
"""

SQLITE = [
    """
    CREATE TABLE IF NOT EXISTS api_tokens (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      name TEXT NOT NULL,
      token_hash TEXT NOT NULL,
      created_at DATETIME NOT NULL
    )
    """,
    "CREATE UNIQUE INDEX IF NOT EXISTS uq_api_tokens_name ON api_tokens (name)",
    "CREATE UNIQUE INDEX IF NOT EXISTS uq_api_tokens_hash ON api_tokens (token_hash)",
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
        cursor.execute("DROP TABLE IF EXISTS api_tokens")
    finally:
        cursor.close()


steps = [step(apply, rollback)]
