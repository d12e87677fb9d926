"""A FastAPI app that enqueues in a request, with a ``workflows.Client`` opened and closed by
its lifespan (so its connections close with the app, not at interpreter exit).

    uvicorn examples.fastapi.app:app            # WORKFLOWS_DATABASE_URL set, schema migrated
    currant worker -q emails -A examples.fastapi.app
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel

import workflows
from workflows import job


@job(queue="emails")
async def send_welcome(email: str) -> str:
    return f"welcomed {email}"


class Signup(BaseModel):
    email: str


def create_app(**client_settings: Any) -> FastAPI:
    """The app; ``client_settings`` (``database_url``, ``schema``...) for its Client, which
    otherwise takes the ``WORKFLOWS_*`` variables (or ``workflows.configure()``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with workflows.Client(**client_settings) as client:
            app.state.workflows = client
            yield
        # Closed here: its pool belonged to the server's event loop.

    app = FastAPI(lifespan=lifespan)

    def client_of(request: Request) -> workflows.Client:
        client: workflows.Client = request.app.state.workflows
        return client

    @app.post("/signups", status_code=202)
    async def signup(body: Signup, request: Request) -> dict[str, str]:
        job_id = await client_of(request).queue(send_welcome, body.email)
        return {"job_id": job_id}

    @app.get("/jobs/{job_id}")
    async def job_status(job_id: str, request: Request) -> dict[str, Any]:
        try:
            status = await client_of(request).get_status(job_id)
        except workflows.ExecutionNotFoundError:
            raise HTTPException(status_code=404, detail="no such job") from None
        return {"status": status["status"], "result": status["result"]}

    return app


app = create_app()
