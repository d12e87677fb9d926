"""What the cron test's worker processes import (``-A tests.chaos.cron_app``): a job on a
schedule that ticks every second, recording each run it makes durably before it returns.

Each run writes a row of ``chaos_side_effects`` (key: the schedule's name) and returns its
token, so an execution's result names the run that produced it, and runs that a killed worker
never finished still show.
"""

from __future__ import annotations

import os
import time
from typing import Any

from tests.chaos.chaos_app import QUEUE, RETRIES, record_side_effect
from workflows import job
from workflows.schedules import Schedule

NAME = "chaos-every-second"
# Long enough that a worker killed at a random moment is often in the middle of one.
RUN_SECONDS = 0.5


# catchup: a tick no worker fired in time (a loaded machine) still fires, so the test can
# expect every second between the first tick and the last to have its run.
@job(queue=QUEUE, retries=RETRIES, schedule=Schedule("* * * * * *", catchup=True, name=NAME))
def every_second() -> dict[str, Any]:
    token = record_side_effect(NAME)
    time.sleep(RUN_SECONDS)
    return {"token": token, "pid": os.getpid()}
