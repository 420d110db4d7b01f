"""The module the `dramatiq` command loads in each worker process (`dramatiq actors.worker`).

It reads the settings, builds this process's engine and broker (`actors.bootstrap`), makes that
broker Dramatiq's global one and declares the actor on it. Dramatiq imports it after forking, so
nothing here is shared between processes.
"""

from __future__ import annotations

import dramatiq

from actors.bootstrap import build
from service import logs
from service.config import Settings
from service.deployment import resolve_namespace

settings = resolve_namespace(Settings.from_environ())
logs.configure(settings, process="worker", batched=True)
context = build(settings)
broker = context.broker
dramatiq.set_broker(broker)
