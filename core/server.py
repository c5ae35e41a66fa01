"""`cogcore serve`: any Hugging Face causal LM checkpoint behind an OpenAI-compatible API (FastAPI +
uvicorn), with the `search` tool run server-side on an index.

    POST /v1/chat/completions   stream (server-sent events), temperature, top_p, seed, max_tokens, stop
    GET  /v1/models             the one model served
    GET  /health                no key needed

A request without `tools` is answered with search run here: `message.content` is every assistant turn's
text (the reasoning, then the `Answer:` line) and a top-level `cogcore` object, which OpenAI clients
keep as an extra field, holds the tool calls the model made, each search with its passages, and the ids
the answer cites (a stream sends each search as it runs, then this object in its last chunk). A request
with `tools=[search]` gets standard client-side function calling instead: a turn with calls ends with
`finish_reason="tool_calls"` and the client sends the results back, which is how `cogcore traces` can use
this server as an OpenAI-compatible teacher.

One thread runs the model, batching continuously: requests with the same sampling settings share one
engine call, one KV-cache row each (so answers never mix), and a queued request joins the running call
as soon as a row finishes, up to `batch_size` rows at once. Bad requests (size, count,
`max_tokens`, an unknown model, a conversation the template cannot render or the window cannot hold) get
a 4xx with an OpenAI-style JSON error body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from jinja2 import TemplateError
from omegaconf import DictConfig
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from cogcore.core.assistant import (
    Assistant,
    Reply,
    Search,
    TextStream,
    answer,
    assistant_generation,
    inert,
    load_assistant,
)
from cogcore.core.generation import GenerationConfig
from cogcore.core.tools import SEARCH, SYSTEM_PROMPT

log = logging.getLogger(__name__)


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Function(BaseModel):
    name: str
    arguments: str


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: Function


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class ChatRequest(BaseModel):
    """The fields of an OpenAI chat completion request that change the answer; others are ignored."""

    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    n: int | None = Field(None, ge=1, le=1)
    tools: list[dict] | None = None


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    kind = "authentication_error" if status == 401 else "invalid_request_error"
    kind = "server_error" if status >= 500 else kind
    error = {"message": message, "type": kind, "param": param, "code": code}
    return JSONResponse({"error": error}, status_code=status)


@dataclass
class Job:
    """One request on its way through the engine; `push` hands events back to the request's event loop."""

    messages: list[dict]
    gcfg: GenerationConfig
    stream: TextStream
    # push(kind, value): ("text", str) | ("search", Search) | ("done", Reply) | ("error", str)
    push: Callable[[str, object], None]
    events: asyncio.Queue
    cancel: threading.Event = field(default_factory=threading.Event)


class Batcher:
    """The one thread that runs the model, batching continuously: an engine call starts with the queued
    jobs that share the first one's sampling settings, up to `size`, and as its rows finish, jobs queued
    behind them with those settings join it, up to `size` rows running at once; each job's reply is handed
    back as soon as its row is done. A job with other settings waits for the call to end (jobs are taken
    in order, so none is passed over for long). The verified decoder (generation.retries, non-streamed
    jobs) retries whole batches, so its calls take no joining jobs."""

    def __init__(self, assistant: Assistant, size: int):
        self.assistant, self.size = assistant, size
        self.pending: deque[Job] = deque()
        self.ready = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._run, name="cogcore-engine", daemon=True)

    def submit(self, job: Job) -> None:
        with self.ready:
            self.pending.append(job)
            self.ready.notify()

    def close(self) -> None:
        with self.ready:
            self.closed = True
            self.ready.notify()
        self.thread.join()

    def _take(self) -> list[Job] | None:
        with self.ready:
            self.ready.wait_for(lambda: self.pending or self.closed)
            if self.closed:
                return None
            batch = [self.pending.popleft()]
            for job in list(self.pending):
                if len(batch) < self.size and job.gcfg == batch[0].gcfg:
                    batch.append(job)
                    self.pending.remove(job)
            return batch

    def _joining(self, gcfg: GenerationConfig, room: int) -> list[Job]:
        """Up to `room` jobs from the head of the queue that share `gcfg`; clients already gone are
        dropped."""
        with self.ready:
            taken = []
            while self.pending and len(taken) < room and self.pending[0].gcfg == gcfg and not self.closed:
                job = self.pending.popleft()
                if not job.cancel.is_set():
                    taken.append(job)
            return taken

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            batch = [job for job in batch if not job.cancel.is_set()]  # clients already gone
            if batch:
                self._answer(batch)

    def _answer(self, batch: list[Job]) -> None:
        """One engine call: `batch`, and the jobs that join it while it runs (appended to it)."""
        gcfg, replied = batch[0].gcfg, set()

        def admit() -> list[tuple[list[dict], TextStream]]:
            joining = self._joining(gcfg, self.size - (len(batch) - len(replied)))
            batch.extend(joining)
            return [(job.messages, job.stream) for job in joining]

        def reply(row: int, reply: Reply) -> None:
            replied.add(row)
            batch[row].push("done", reply)

        try:
            answer(
                self.assistant,
                [job.messages for job in batch],
                gcfg,
                [job.stream for job in batch],
                lambda row, search: batch[row].push("search", search),
                admit=admit,
                on_reply=reply,
            )
        except Exception as e:  # the requests of a failed batch get its error instead of waiting forever
            log.exception("engine failed on a batch of %d requests", len(batch))
            for row, job in enumerate(batch):
                if row not in replied:
                    job.push("error", f"{type(e).__name__}: {e}")


def _text(message: Message, i: int) -> str | None:
    if isinstance(message.content, list):
        return "".join(part.text for part in message.content)
    if message.content is None and message.role in ("system", "developer", "user", "tool"):
        raise ApiError(
            400, f"messages[{i}]: a {message.role} message needs content", f"messages[{i}].content"
        )
    return message.content


def _answered_call(m: Message, i: int, open_calls: list[str]) -> str:
    """The id of the call tool message `m` (messages[i]) answers: one of the last assistant turn's calls
    that no tool message answered yet."""
    if not m.tool_call_id:
        raise ApiError(
            400,
            f"messages[{i}]: a tool message needs tool_call_id, the id of the tool call it answers",
            f"messages[{i}].tool_call_id",
        )
    if m.tool_call_id not in open_calls:
        waiting = f"the calls waiting for a result are {open_calls}" if open_calls else "no call is waiting"
        raise ApiError(
            400,
            f"messages[{i}].tool_call_id={m.tool_call_id!r} answers no call of the assistant turn before "
            f"it ({waiting})",
            f"messages[{i}].tool_call_id",
        )
    open_calls.remove(m.tool_call_id)
    return m.tool_call_id


def conversation(request: ChatRequest, assistant: Assistant, client_tools: bool) -> list[dict]:
    """The request's messages as the engine's chat messages, opened with cogcore's system prompt when the
    model has the search tool and the client sent no system message. Every text the client sent is made
    inert (core.assistant.inert): special tokens enter the prompt only through the chat template."""
    tokenizer, messages, open_calls = assistant.engine.tokenizer, [], []
    for i, m in enumerate(request.messages):
        text = _text(m, i)
        content = None if text is None else inert(tokenizer, text)
        message = {"role": "system" if m.role == "developer" else m.role, "content": content}
        if m.role == "assistant":
            open_calls = [call.id for call in m.tool_calls or []]
        if m.tool_calls:
            message["tool_calls"] = [call.model_dump() for call in m.tool_calls]
            for call in message["tool_calls"]:
                call["function"]["arguments"] = inert(tokenizer, call["function"]["arguments"])
        if m.role == "tool":
            message.update(tool_call_id=_answered_call(m, i, open_calls), name=m.name or SEARCH)
        messages.append(message)
    allowed = ("user", "tool") if client_tools else ("user",)
    if messages[-1]["role"] not in allowed:
        hint = "" if client_tools else " (send tools=[search] to run the search calls yourself)"
        raise ApiError(
            400,
            f"the last message must be from: {' or '.join(allowed)}, not {messages[-1]['role']}{hint}",
            "messages",
        )
    if assistant.engine.tools and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": SYSTEM_PROMPT})
    return messages


def check_tools(request: ChatRequest, assistant: Assistant) -> bool:
    """Whether the client runs the tool calls itself (it sent `tools`); only `search` is known."""
    if not request.tools:
        return False
    if not assistant.engine.tools:
        raise ApiError(
            400,
            f"model {assistant.name!r} is served without tools: its chat template writes no tool "
            "calls in a format cogcore parses",
            "tools",
        )
    names = [(tool.get("function") or {}).get("name") for tool in request.tools]
    if any(name != SEARCH for name in names):
        raise ApiError(400, f"unknown tools {names}: the only tool this model knows is {SEARCH!r}", "tools")
    return True


def create_app(assistant: Assistant, cfg: DictConfig) -> FastAPI:
    """The app serving `assistant`; `cfg` holds the limits, defaults and `api_key` of conf/serve.yaml."""
    batcher = Batcher(assistant, cfg.batch_size)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.thread.start()
        yield
        batcher.close()

    app = FastAPI(title="cogcore", lifespan=lifespan)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return error_body(e.status, e.message, e.param, e.code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        errors = e.errors()
        broken = next((error for error in errors if error["type"] == "json_invalid"), None)
        if broken is not None:  # its loc is ("body", <character>): no field to name
            at, why = broken["loc"][-1], broken.get("ctx", {}).get("error", broken["msg"])
            return error_body(400, f"the request body is not valid JSON: {why} at character {at}")
        where = [".".join(str(x) for x in error["loc"] if x != "body") for error in errors]
        message = "; ".join(f"{w or 'body'}: {error['msg']}" for w, error in zip(where, errors, strict=True))
        return error_body(400, message, where[0] if where else None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        routes = "POST /v1/chat/completions, GET /v1/models and GET /health"
        if e.status_code == 404:
            message = f"no such path: {request.url.path}; this server answers {routes}"
        elif e.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; this server answers {routes}"
        else:
            message = str(e.detail)
        return error_body(e.status_code, message, code="unknown_url" if e.status_code == 404 else None)

    def authorized(request: Request) -> None:
        if cfg.api_key is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not secrets.compare_digest(given, f"Bearer {cfg.api_key}".encode()):
            raise ApiError(
                401,
                "missing or wrong API key: send the header 'Authorization: Bearer <key>' with the key the "
                "server was started with (api_key= or COGCORE_API_KEY)",
                code="invalid_api_key",
            )

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": assistant.name, "search": bool(assistant.engine.tools)}

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def models() -> dict:
        model = {"id": assistant.name, "object": "model", "created": created, "owned_by": "cogcore"}
        return {"object": "list", "data": [model]}

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)])
    async def completions(request: ChatRequest, http: Request):
        job = prepare(request)
        batcher.submit(job)
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": assistant.name}
        if request.stream:
            return StreamingResponse(sse(job, meta), media_type="text/event-stream")
        left = asyncio.ensure_future(_disconnected(http))
        try:
            while True:
                event = asyncio.ensure_future(job.events.get())
                await asyncio.wait((event, left), return_when=asyncio.FIRST_COMPLETED)
                if not event.done():  # the client went away: its row stops at its next token
                    event.cancel()
                    job.cancel.set()
                    return None
                kind, value = event.result()
                if kind == "error":
                    raise ApiError(500, f"the engine failed: {value}")
                if kind == "done":
                    return completion(value, meta)
        finally:
            left.cancel()

    def prepare(request: ChatRequest) -> Job:
        if request.model != assistant.name:
            raise ApiError(
                404,
                f"model {request.model!r} is not served here; this server serves {assistant.name!r}",
                "model",
                "model_not_found",
            )
        if len(request.messages) > cfg.max_messages:
            raise ApiError(
                400, f"{len(request.messages)} messages: at most {cfg.max_messages} are accepted", "messages"
            )
        size = sum(len(json.dumps(m.model_dump(exclude_none=True))) for m in request.messages)
        if size > cfg.max_chars:
            raise ApiError(
                400, f"messages hold {size} characters: at most {cfg.max_chars} are accepted", "messages"
            )
        asked = request.max_completion_tokens or request.max_tokens
        if asked is not None and asked > cfg.max_tokens:
            raise ApiError(400, f"max_tokens={asked}: at most {cfg.max_tokens} here", "max_tokens")
        stop = [request.stop] if isinstance(request.stop, str) else request.stop or []
        if len(stop) > 4 or not all(stop):
            raise ApiError(400, "stop: at most 4 non-empty strings", "stop")
        client_tools = check_tools(request, assistant)
        messages = conversation(request, assistant, client_tools)
        engine = assistant.engine
        try:
            prompt = len(engine.prompt(messages))
        except TemplateError as e:
            message = f"the model's chat template cannot render these messages: {e}"
            raise ApiError(400, message, "messages") from e
        # Unasked, an answer may take what the window leaves, up to the server's max_tokens.
        max_tokens = asked or max(1, min(cfg.max_tokens, engine.context - prompt))
        if prompt + max_tokens > engine.context:
            raise ApiError(
                400,
                f"the messages take {prompt} tokens and max_tokens={max_tokens}, more than the model's "
                f"window of {engine.context}; shorten the messages or lower max_tokens",
                "messages",
                "context_length_exceeded",
            )
        asked = {"temperature": request.temperature, "top_p": request.top_p, "seed": request.seed}
        sampling = {key: value for key, value in asked.items() if value is not None}
        if request.stream:  # what a stream shows cannot be taken back: one try (core.retries)
            sampling["retries"] = 0
        gcfg = assistant_generation(assistant, cfg, run_tools=not client_tools, **sampling)
        loop, events = asyncio.get_running_loop(), asyncio.Queue()

        def push(kind: str, value: object) -> None:
            loop.call_soon_threadsafe(events.put_nowait, (kind, value))

        emit = (lambda piece: push("text", piece)) if request.stream else None
        cancel = threading.Event()
        stream = TextStream(engine.tokenizer, engine.end_ids, emit, stop, max_tokens, cancel, engine.format)
        return Job(messages, gcfg, stream, push, events, cancel)

    return app


async def _disconnected(http: Request) -> None:
    """Returns when the client of a request whose body has been read closes its connection."""
    while (await http.receive())["type"] != "http.disconnect":
        pass


def _search(search: Search) -> dict:
    return {"query": search.query, "k": search.k, "passages": search.passages}


def _tool_calls(reply: Reply) -> list[dict]:
    """The calls of a turn that ended for the client to run, with ids unique across its conversation."""
    return [{**call, "id": f"call_{uuid.uuid4().hex[:24]}"} for call in reply.messages[-1]["tool_calls"]]


def _cogcore(reply: Reply) -> dict:
    calls = [call for m in reply.messages if m["role"] == "assistant" for call in m.get("tool_calls", [])]
    return {
        "tool_calls": calls,
        "searches": [_search(s) for s in reply.searches],
        "citations": reply.citations,
        "messages": reply.messages,
        "tries": reply.tries,
    }


def _usage(reply: Reply) -> dict:
    total = reply.prompt_tokens + reply.completion_tokens
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": total,
    }


def completion(reply: Reply, meta: dict) -> dict:
    message = {"role": "assistant", "content": reply.text}
    if reply.finish == "tool_calls":
        message["tool_calls"] = _tool_calls(reply)
    choice = {"index": 0, "message": message, "finish_reason": reply.finish, "logprobs": None}
    return {
        **meta,
        "object": "chat.completion",
        "choices": [choice],
        "usage": _usage(reply),
        "cogcore": _cogcore(reply),
    }


def _chunk(meta: dict, delta: dict, finish: str | None = None) -> dict:
    choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
    return {**meta, "object": "chat.completion.chunk", "choices": [choice]}


def _event(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


async def sse(job: Job, meta: dict) -> AsyncIterator[str]:
    """The answer as server-sent events: text as it is written, each search as it runs, then the finish
    reason with usage and the `cogcore` object. A client that leaves stops its row at the next token."""
    try:
        yield _event(_chunk(meta, {"role": "assistant", "content": ""}))
        while True:
            kind, value = await job.events.get()
            if kind == "text":
                yield _event(_chunk(meta, {"content": value}))
            elif kind == "search":
                yield _event({**_chunk(meta, {}), "cogcore": {"search": _search(value)}})
            elif kind == "error":
                yield _event({"error": {"message": f"the engine failed: {value}", "type": "server_error"}})
                break
            else:
                calls = _tool_calls(value) if value.finish == "tool_calls" else []
                delta = (
                    {"tool_calls": [{"index": i, **call} for i, call in enumerate(calls)]} if calls else {}
                )
                last = _chunk(meta, delta, value.finish)
                yield _event({**last, "usage": _usage(value), "cogcore": _cogcore(value)})
                break
        yield _event("[DONE]")
    finally:
        job.cancel.set()


def serve(cfg: DictConfig) -> None:
    """`cogcore serve`: load the checkpoint and index, then serve until Ctrl-C."""
    import uvicorn

    assistant = load_assistant(cfg)
    for note in assistant.notes:
        print(f"serve: {note}")
    config = uvicorn.Config(create_app(assistant, cfg), host=cfg.host, port=cfg.port, log_level=cfg.log_level)
    sock = config.bind_socket()  # bound here so that port=0 (any free port) can be reported
    host, port = sock.getsockname()[:2]
    key = "required" if cfg.api_key is not None else "off"
    print(f"serve: model {assistant.name!r} at http://{host}:{port}/v1 (API key: {key})", flush=True)
    if cfg.api_key is None and not ip_address(host).is_loopback:
        print(f"serve: warning: listening on {host} with no API key; set api_key= or COGCORE_API_KEY")
    uvicorn.Server(config).run(sockets=[sock])
