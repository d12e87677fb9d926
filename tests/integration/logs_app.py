"""Jobs that log through the application's own logger, for the log format tests; module-level
so a worker process can import them by path."""

from __future__ import annotations

import logging

from workflows import job

log = logging.getLogger("logs_app")


@job(queue="work", retries=0)
async def greet(who: str) -> str:
    log.info("hello %s", who)
    return who


@job(queue="work", retries=0)
def greet_in_a_thread(who: str) -> str:
    # A plain function: it runs on a thread of the worker's pool.
    log.info("hello %s", who)
    return who
