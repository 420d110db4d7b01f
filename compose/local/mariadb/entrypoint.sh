#!/bin/sh
# Start mariadbd as the official image would, for the variables the compose stack uses: an empty
# data folder is initialised, and the database and user named by MARIADB_DATABASE,
# MARIADB_USER and MARIADB_PASSWORD are created (at every start: the statements are idempotent).
set -eu
datadir=/var/lib/mysql
if [ ! -d "$datadir/mysql" ]; then
  chown mysql:mysql "$datadir"
  mariadb-install-db --user=mysql --datadir="$datadir" --skip-test-db >/dev/null
fi
init=/run/mysqld/init.sql
umask 077
: >"$init"
if [ -n "${MARIADB_DATABASE:-}" ]; then
  echo "CREATE DATABASE IF NOT EXISTS \`$MARIADB_DATABASE\`;" >>"$init"
fi
if [ -n "${MARIADB_USER:-}" ]; then
  echo "CREATE USER IF NOT EXISTS '$MARIADB_USER'@'%' IDENTIFIED BY '${MARIADB_PASSWORD:-}';" >>"$init"
  if [ -n "${MARIADB_DATABASE:-}" ]; then
    echo "GRANT ALL ON \`$MARIADB_DATABASE\`.* TO '$MARIADB_USER'@'%';" >>"$init"
  fi
fi
chown mysql:mysql "$init"
exec mariadbd --user=mysql --datadir="$datadir" --bind-address=0.0.0.0 --skip-name-resolve \
  --init-file="$init" "$@"
