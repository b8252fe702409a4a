"""The digit app's web server: FastAPI routes over :mod:`nnscratch.app.core`.

=========================  ====================================================================
``GET /``                  the Draw page; ``GET /train`` the Train page; ``/static/...``
``GET /api/status``        backend, model, training run, where a model is saved, defaults
``POST /api/predict``      ``{"image": [[0-255, ...], ...]}`` → ``{"digit", "probabilities",
                           "input"}``
``POST /api/train``        ``{"epochs", "hidden", "lr", "batch_size", "limit"}`` (all
                           optional) → 202; 409 while a run is going
``POST /api/train/stop``   stop the run after its current epoch → 202
``GET /api/train/events``  ``text/event-stream``: the run's events; ``Last-Event-ID`` resumes
``POST /api/save``         save the current model where the server was told to: ``{"path",
                           "accuracy", "replaced"}``; 409 with both accuracies before
                           replacing a better model, unless ``{"overwrite": true}``
=========================  ====================================================================

Bad requests get a 4xx and ``{"detail": "what is wrong"}``: 400 not JSON, 413 too
large, 415 not ``application/json``, 422 anything else wrong with the content, 409 a
conflict, 503 no model yet. Requiring ``application/json`` on every POST means another
web site cannot make a visitor's browser post to the app (such a request needs a CORS
preflight, which the app never grants); the Host check (``allowed_hosts``) stops DNS
rebinding when it listens on the loopback interface only.

Parsing, preprocessing and predicting run in the thread pool, and training in its own
worker thread, so the event loop stays free to answer and to stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect

from nnscratch.app.core import (
    MAX_BODY_BYTES,
    AppState,
    RequestError,
    TrainingRun,
    format_event,
    no_fields,
    parse_image,
    parse_json,
    parse_save_request,
    parse_train_settings,
)
from nnscratch.errors import DataError

STATIC = Path(__file__).parent / "static"
POLL_SECONDS = 0.05  # how often an event stream looks for new events
KEEP_ALIVE_SECONDS = 15.0  # a comment line, so that proxies keep a quiet stream open
DRAIN_BYTES = 64 * 2**20  # at most this much of a refused body is read, to deliver the 413
# The pages load nothing from elsewhere; the browser enforces it.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'",
    "Cache-Control": "no-cache",
}


def create_app(state: AppState | None = None, *,
               allowed_hosts: list[str] | None = None) -> FastAPI:
    """The FastAPI application serving ``state`` (by default: no model yet, MNIST from
    ``NNSCRATCH_DATA`` or the cache). ``allowed_hosts``: the Host names accepted (None:
    any)."""
    state = state if state is not None else AppState()
    app = FastAPI(title="nnscratch digit app", docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.digits = state
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)

    @app.exception_handler(RequestError)
    async def refuse(_: Request, err: RequestError) -> JSONResponse:
        return JSONResponse({"detail": err.message, **err.fields}, status_code=err.status)

    @app.get("/", include_in_schema=False)
    async def draw_page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    @app.get("/train", include_in_schema=False)
    async def train_page() -> FileResponse:
        return FileResponse(STATIC / "train.html", headers=PAGE_HEADERS)

    @app.get("/api/status")
    async def status() -> dict[str, Any]:
        return state.status()

    @app.post("/api/predict")
    async def predict(request: Request) -> dict[str, Any]:
        body = await read_json_body(request)
        return await run_in_threadpool(_predict, state, body)

    @app.post("/api/train", status_code=202)
    async def train(request: Request) -> dict[str, Any]:
        settings = parse_train_settings(parse_json(await read_json_body(request)))
        run = state.trainer.start(settings)
        return {"run": run.number, "events": "/api/train/events"}

    @app.post("/api/train/stop", status_code=202)
    async def stop(request: Request) -> dict[str, Any]:
        no_fields(parse_json(await read_json_body(request, allow_empty=True)))
        run = state.trainer.stop()
        return {"run": run.number, "detail": "the run stops after its current epoch"}

    @app.get("/api/train/events")
    async def events(request: Request) -> Any:
        run = state.trainer.run
        if run is None:
            raise RequestError(404, "no training run yet: POST /api/train (the Train page's "
                                    "Start button) starts one")
        start = run.index_after(request.headers.get("last-event-id"))
        return StreamingResponse(event_stream(run, start), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    @app.post("/api/save")
    async def save(request: Request) -> dict[str, Any]:
        # Where the model goes is the server's choice (--model), never the client's.
        overwrite = parse_save_request(parse_json(await read_json_body(request,
                                                                       allow_empty=True)))
        return await run_in_threadpool(state.save, overwrite)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _predict(state: AppState, body: bytes) -> dict[str, Any]:
    image = parse_image(parse_json(body))
    try:
        return state.read(image)
    except DataError as err:  # a blank picture
        raise RequestError(422, str(err)) from err


async def read_json_body(request: Request, allow_empty: bool = False) -> bytes:
    """The request's body, refused unless it is ``application/json`` and at most
    ``MAX_BODY_BYTES`` long (counted as it arrives, whatever Content-Length says)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise RequestError(415, "send the body as JSON with the header Content-Type: "
                                f"application/json (got {content_type or 'none'!r})")
    too_large = RequestError(413, f"the request body is larger than {MAX_BODY_BYTES:,} "
                                  "bytes: send a smaller image (at most 1024 x 1024)")
    declared = request.headers.get("content-length", "")
    stream = request.stream()
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        await _drain(stream, 0)
        raise too_large
    chunks, size = [], 0
    async for chunk in stream:
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            await _drain(stream, size)
            raise too_large
        chunks.append(chunk)
    body = b"".join(chunks)
    return b"{}" if allow_empty and not body.strip() else body


async def _drain(stream: AsyncIterator[bytes], received: int) -> None:
    """Read and drop the rest of a refused body, up to ``DRAIN_BYTES`` in all: a server
    that answers and closes while the client is still sending resets the connection,
    and the client never reads the answer (the 413 that says what is wrong)."""
    try:
        async for chunk in stream:
            received += len(chunk)
            if received > DRAIN_BYTES:
                return  # beyond this, the connection is closed under the sender
    except ClientDisconnect:
        return


async def event_stream(run: TrainingRun, start: int) -> AsyncIterator[str]:
    """Server-sent events of ``run`` from event ``start`` on, until its last event."""
    yield "retry: 1000\n\n"  # reconnect after a second if the connection drops
    index, quiet = start, 0.0
    while True:
        events = run.events_from(index)
        for event_id, event in events:
            yield format_event(event_id, event)
        index += len(events)
        if run.finished and index >= len(run):
            return
        quiet = 0.0 if events else quiet + POLL_SECONDS
        if quiet >= KEEP_ALIVE_SECONDS:
            quiet = 0.0
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL_SECONDS)
