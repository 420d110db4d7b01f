# syntax=docker/dockerfile:1
# HTTP Job Runner: one image for every process role (web, worker, release).
#
#   docker build -t http-job-runner .
#   docker run --rm -p 127.0.0.1:8000:8000 --env-file compose/jobrunner.env http-job-runner web
#
# BASE is any Debian bookworm image with python3 >= 3.11 and its venv module: the public
# python:3.11-slim-bookworm by default, or a locally built one (tests/container/build-base-image.sh)
# where no registry can be reached. Job scripts go into $JOB_HOME/bin of a derived image
# (see examples/hello_world/Dockerfile).
ARG BASE=python:3.11-slim-bookworm

# ---- builder: a virtualenv with every dependency; mysqlclient is compiled here --------------------
FROM ${BASE} AS builder
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# Debian's python3 has its headers in python3-dev; the python:* images ship them already.
# Package versions are the BASE's Debian release's (a pin would break with every point release).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential default-libmysqlclient-dev pkg-config \
 && if ! python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(sysconfig.get_path("include") + "/Python.h"))'; then \
      apt-get install -y --no-install-recommends python3-dev; \
    fi \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv
WORKDIR /app/src
# The dependencies (and the build backend) as pinned in pyproject.toml, before any code: this
# layer, the slow one, is rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); print("\n".join(p["build-system"]["requires"] + p["project"]["dependencies"] + p["project"]["optional-dependencies"]["mysql"]))' >/tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt
# The code, installed editable from /app/src (root-owned, read-only for the service); the
# migrations are in migrations/. The mysql extra (mysqlclient) was installed above.
COPY README.md ./
COPY actors/ actors/
COPY service/ service/
COPY client/ client/
COPY jobrunner/ jobrunner/
COPY migrations/ migrations/
RUN pip install --no-cache-dir --no-deps --no-build-isolation -e '.[mysql]' \
 && python -m compileall -q service actors client jobrunner

# ---- the image: the virtualenv, the source tree, and mysqlclient's runtime library only -----------
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive \
    JOB_HOME=/app/jobs
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmariadb3 tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 jobrunner \
 && useradd --no-log-init --uid 10001 --gid jobrunner --create-home --home-dir /home/jobrunner \
      --shell /bin/sh jobrunner \
 && groupadd --gid 10002 job \
 && useradd --no-log-init --uid 10002 --gid job --create-home --home-dir /home/job \
      --shell /bin/sh job \
 && mkdir -p "$JOB_HOME/bin" \
 && chmod 755 "$JOB_HOME" "$JOB_HOME/bin"
COPY docker/entrypoint.sh /usr/local/bin/jobrunner-entrypoint
COPY docker/healthcheck.py /usr/local/bin/jobrunner-healthcheck
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app/src /app/src
ENV PATH=/opt/venv/bin:$JOB_HOME/bin:$PATH \
    JOBRUNNER_JOB_USER=job \
    HOST=0.0.0.0 \
    PORT=8000 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# fail the build, not the first start, if mysqlclient's library is missing
RUN python -c 'import MySQLdb' && jobrunner --help >/dev/null
# Users: the image starts as root only so that the entrypoint can give each role its own. The web,
# the release step and any other command run as `jobrunner` (10001); the worker stays root to
# start every job as `job` (10002, JOBRUNNER_JOB_USER), which owns nothing but its home: it can
# neither read the worker's secrets (/proc/<pid>/environ) nor change the scripts of
# $JOB_HOME/bin (root's, read-only). Started with --user, every role runs as that user instead
# (a worker then needs JOBRUNNER_JOB_USER= to run jobs as itself). See SECURITY.md.
WORKDIR $JOB_HOME
EXPOSE 8000
# web: GET /healthz answers; worker: its Dramatiq process lives (no HTTP there); see docker/healthcheck.py
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["jobrunner-healthcheck"]
# tini is PID 1: it forwards signals to the role and reaps whatever a killed job left behind
ENTRYPOINT ["/usr/bin/tini", "--", "jobrunner-entrypoint"]
CMD []
