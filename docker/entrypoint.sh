#!/bin/sh
# Entry point of the HTTP Job Runner image; tini (PID 1) runs it and reaps every orphan.
#
#   web | http_server       the HTTP API           (exec jobrunner web)
#   worker | delayed_job    the Dramatiq workers   (exec jobrunner worker)
#   release | migrate       apply the migrations, retrying for JOBRUNNER_STARTUP_TIMEOUT
#                           seconds while the database does not answer yet
#   anything else           run as a command: `bash`, `jobrunner --help`, `hello_world.sh`, ...
#
# With no argument the role is RUN_MODE's (one of the names above), else `web`.
#
# Started as root (the image's default), every role but the worker drops to the `jobrunner`
# user first; the worker stays root to start its jobs as JOBRUNNER_JOB_USER (see the Dockerfile).
set -eu

usage="web, http_server, worker, delayed_job, release or migrate"

release() {
  timeout=${JOBRUNNER_STARTUP_TIMEOUT:-10}
  timeout=${timeout%.*}
  deadline=$(($(date +%s) + ${timeout:-0}))
  until jobrunner migrate "$@"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "jobrunner-entrypoint: migrations failed for ${timeout:-0} s (JOBRUNNER_STARTUP_TIMEOUT); giving up" >&2
      exit 1
    fi
    echo "jobrunner-entrypoint: retrying the migrations in 1 s" >&2
    sleep 1
  done
}

# the user of every role but the worker, when started as root (the image has it)
service_user=
if [ "$(id -u)" = 0 ] && id jobrunner >/dev/null 2>&1; then
  service_user=jobrunner
fi

# run "$@" as the service user, if there is one; as whoever we are otherwise
as_service_user() {
  if [ -n "$service_user" ]; then
    HOME=/home/jobrunner exec setpriv --reuid=jobrunner --regid=jobrunner --init-groups "$@"
  fi
  exec "$@"
}

from_run_mode=
if [ "$#" -eq 0 ]; then
  set -- "${RUN_MODE:-web}"
  from_run_mode=1
fi

case "$1" in
  web | http_server)
    shift
    as_service_user jobrunner web "$@"
    ;;
  worker | delayed_job)
    shift
    exec jobrunner worker "$@"
    ;;
  release | migrate)
    shift
    if [ -n "$service_user" ]; then
      HOME=/home/jobrunner exec setpriv --reuid=jobrunner --regid=jobrunner --init-groups \
        /bin/sh "$0" release "$@"
    fi
    release "$@"
    ;;
  *)
    if [ -n "$from_run_mode" ]; then
      echo "jobrunner-entrypoint: RUN_MODE=$1 is not one of: $usage" >&2
      exit 2
    fi
    as_service_user "$@"
    ;;
esac
