"""Which deployment this is, and the Redis namespace that belongs to it alone.

Redis pub/sub ignores database numbers, so two deployments on one Redis server would share
channels (a follower of one would get the other's output, a cancel of one would stop the
other's job) if they shared a key prefix. By default the prefix is `jobrunner-<id>`, with the
id the migrations made in the deployment's own database: every process of a deployment finds
the same one, and no two deployments find the same. An operator may still choose the prefix
(JOBRUNNER_REDIS_NAMESPACE); a process then checks on the bus that no other deployment uses
it, and refuses to start if one does.
"""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from service.bus import Bus
from service.config import Settings
from service.db import deployment, transaction

PREFIX = "jobrunner-"


class NamespaceTaken(RuntimeError):
    """The Redis namespace belongs to another deployment."""


def deployment_id(engine: Engine) -> str:
    with transaction(engine) as conn:
        found = conn.execute(sa.select(deployment.c.id).order_by(deployment.c.id)).scalar()
    if found is None:
        raise RuntimeError("this database has no deployment id: run `jobrunner migrate`")
    return str(found)


def with_namespace(settings: Settings, engine: Engine) -> Settings:
    """The settings with their Redis namespace: the operator's, or this deployment's own."""
    if settings.redis_namespace:
        return settings
    return dataclasses.replace(settings, redis_namespace=PREFIX + deployment_id(engine)[:16])


def claim_namespace(bus: Bus, engine: Engine) -> None:
    """Make sure the bus's namespace is this deployment's (the first process to come takes it);
    NamespaceTaken if another deployment took it."""
    mine = deployment_id(engine)
    owner = bus.claim(bus.keys.owner, mine.encode())
    if owner.decode() != mine:
        raise NamespaceTaken(
            f"the Redis namespace {bus.keys.namespace!r} belongs to another deployment (its "
            f"database's id is {owner.decode()}, this one's {mine}): give this deployment a "
            "JOBRUNNER_REDIS_NAMESPACE of its own, or leave it unset"
        )


def resolve_namespace(settings: Settings) -> Settings:
    """`with_namespace`, for a process that has no engine yet (one short connection)."""
    if settings.redis_namespace:
        return settings
    engine = sa.create_engine(settings.database_url, poolclass=sa.pool.NullPool)
    try:
        return with_namespace(settings, engine)
    finally:
        engine.dispose()
