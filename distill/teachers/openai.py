"""teacher=openai: any OpenAI-compatible chat endpoint (vLLM, SGLang, TGI, llama.cpp, a hosted API) writes
the traces. cogcore's `search` is offered as an OpenAI tool; the tool loop runs here, client-side, against
the Retriever, up to `max_tool_calls` calls per question.

The endpoint is called through `openai.AsyncOpenAI` with its own retries off (max_retries=0), because the
retry loop here counts errors for the progress bar and takes its backoff from the config: a request that
fails with 429 (or 408, 409), a 5xx, a timeout or a dropped connection is retried after the `Retry-After`
the server asked for, else after an exponential backoff with jitter, at most `client.retries` times.
Questions run `client.concurrency` at a time, each with at most one request in flight. A trace keeps each
response's `content`; reasoning a server returns apart from it (vLLM's `reasoning_content`) is not kept.

Every response body is kept in a content-addressed cache, `<cache>/<sha256 of the request>.json`, written
atomically before it is used, so a re-run, or a run resumed after a kill, replays what it has already
paid for and makes no new call for it.

A question ends as a trace, or as `Rejected` with one of these reasons (nothing is retried forever):
    malformed_response  the body is not JSON, or not a chat completion
    unknown_tool        a call names a tool other than `search`
    bad_tool_arguments  a `search` call's arguments are not what the tool takes
    max_tool_calls      more calls than `max_tool_calls`: a model that never reaches an answer
    length              the response was cut at the token limit (finish_reason "length")
    no_answer           the final turn has no `Answer:` line
    bad_request         the endpoint refused the request (a 4xx but 408, 409, 429: e.g. the context is full)
A request that still fails after its retries raises EndpointError for its question: the question is
written nowhere, so the next run retries it, and the job reports it.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import logging
import os
import random
import re
import time
from collections import Counter
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from openai import APIConnectionError, APIStatusError, AsyncOpenAI

from cogcore.core.io import DataError, atomic_write_text
from cogcore.core.tools import (
    SEARCH,
    SEARCH_TOOL,
    UNAVAILABLE,
    ToolCallError,
    final_answer,
    parse_search_call,
    render_results,
)
from cogcore.core.trace import Rejected
from cogcore.distill.teachers import conversation, drawn, make_trace
from cogcore.retrieval.retriever import Retriever

FATAL = (401, 403, 404)  # a wrong key, model or URL: no question can succeed, so the job stops
RETRIED = (408, 409, 429)  # and every 5xx; any other 4xx refuses this one request (e.g. 400 when the
# context is full), and its question is rejected


class EndpointError(RuntimeError):
    """One request failed on every try (the last error is the message)."""


class Refused(Exception):
    """The endpoint refused this request (a 4xx not in RETRIED): retrying it cannot help."""


class MalformedResponse(Exception):
    """The response body is not JSON, or not a chat completion."""


def api_key(ccfg: DictConfig) -> str:
    """The key from the environment variable the config names; never from a file, never logged."""
    if ccfg.api_key_env is None:
        return "EMPTY"  # a local server started without --api-key accepts any
    key = os.environ.get(ccfg.api_key_env)
    if not key:
        raise DataError(
            f"teacher.client.api_key_env={ccfg.api_key_env}: the environment variable {ccfg.api_key_env} "
            "is not set; export it with the endpoint's API key, or set teacher.client.api_key_env=null for "
            "a server that needs none"
        )
    return key


def retry_after(headers) -> float | None:
    """Seconds the server asked to wait (`Retry-After`: seconds or an HTTP date), or None."""
    value = (headers.get("retry-after") or "").strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    parsed = email.utils.parsedate_tz(value) if value else None
    return None if parsed is None else max(0.0, email.utils.mktime_tz(parsed) - time.time())


class Endpoint:
    """POST /chat/completions with retries and the response cache; `stats` counts calls (HTTP requests
    sent), cached (responses replayed), tokens (of new calls) and errors (failed requests, retried)."""

    def __init__(self, tcfg: DictConfig, cache_dir: Path, stats: Counter):
        self.cfg = tcfg.client
        self.cache_dir = cache_dir
        self.stats = stats
        # The openai client's HTTP library (httpx, httpx2 in recent releases) logs each request at INFO,
        # which Hydra's logging shows: a line per request between the progress bar's updates. Failures are
        # counted in `stats` and reported at the end instead.
        for name in ("httpx", "httpx2"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.client = AsyncOpenAI(
            base_url=self.cfg.base_url, api_key=api_key(self.cfg), max_retries=0, timeout=self.cfg.timeout
        )

    async def complete(self, body: dict) -> dict:
        """The parsed response to the request `body`, from the cache or from the endpoint;
        MalformedResponse when the body is not JSON."""
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        path = self.cache_dir / digest[:2] / f"{digest}.json"
        fresh = not (self.cfg.cache and path.exists())
        if fresh:
            text = await self._post(body)
            if self.cfg.cache:  # kept as received, malformed or not: a re-run judges it the same way
                atomic_write_text(path, text)
        else:
            self.stats["cached"] += 1
            text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise MalformedResponse(f"the response is not JSON ({e.msg}): {text[:200]!r}") from None
        usage = data.get("usage") if isinstance(data, dict) else None
        if fresh and isinstance(usage, dict):
            self.stats["tokens"] += usage.get("total_tokens") or 0
        return data

    async def _post(self, body: dict) -> str:
        extra = {key: value for key, value in body.items() if key not in ("model", "messages", "tools")}
        for attempt in range(self.cfg.retries + 1):
            self.stats["calls"] += 1
            try:
                raw = await self.client.chat.completions.with_raw_response.create(
                    model=body["model"], messages=body["messages"], tools=body["tools"], extra_body=extra
                )
                return raw.http_response.text
            except APIStatusError as e:
                if e.status_code in FATAL:
                    raise DataError(
                        f"{self.cfg.base_url}: HTTP {e.status_code} for model {body['model']!r} "
                        f"({e.message}); check teacher.client.base_url, teacher.model and the key in "
                        f"${self.cfg.api_key_env}"
                    ) from None
                if e.status_code not in RETRIED and e.status_code < 500:
                    raise Refused(f"HTTP {e.status_code}: {e.message}") from None
                problem, wait = f"HTTP {e.status_code}", retry_after(e.response.headers)
            except APIConnectionError as e:  # timeouts (APITimeoutError) included
                problem, wait = type(e).__name__, None
            self.stats["errors"] += 1
            if attempt < self.cfg.retries:
                if wait is None:  # exponential backoff with "equal jitter": half fixed, half random
                    ceiling = min(self.cfg.max_backoff, self.cfg.backoff * 2**attempt)
                    wait = ceiling / 2 + random.uniform(0, ceiling / 2)
                await asyncio.sleep(wait)
        raise EndpointError(f"{problem} on each of {self.cfg.retries + 1} tries")


def request_messages(messages: list[dict]) -> list[dict]:
    """Trace turns as the chat API takes them (a trace's tool turn also names its tool)."""
    return [{k: v for k, v in m.items() if not (m["role"] == "tool" and k == "name")} for m in messages]


def parse_completion(data) -> tuple[dict, str | None]:
    """(message, finish_reason) of the first choice; MalformedResponse saying what is wrong."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedResponse(f"the response has no choices: {json.dumps(data)[:200]}")
    message = choices[0].get("message")
    if not isinstance(message, dict) or not isinstance(message.get("content") or "", str):
        raise MalformedResponse(f"choices[0] has no assistant message: {json.dumps(data)[:200]}")
    return message, choices[0].get("finish_reason")


def assistant_turn(message: dict, calls_so_far: int) -> dict:
    """The response message as a trace turn: text and tool calls in the trace schema."""
    turn = {"role": "assistant", "content": message.get("content")}
    calls = message.get("tool_calls") or []
    if calls:
        turn["tool_calls"] = []
        for n, call in enumerate(calls):
            call = call if isinstance(call, dict) else {}
            function = call.get("function") if isinstance(call.get("function"), dict) else {}
            arguments = function.get("arguments", "")
            turn["tool_calls"].append(
                {
                    "id": str(call.get("id") or f"call_{calls_so_far + n}"),
                    "type": "function",
                    "function": {
                        "name": str(function.get("name")),
                        "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
                    },
                }
            )
    return turn


async def openai_trace(question: dict, endpoint: Endpoint, retriever: Retriever, tcfg: DictConfig) -> dict:
    """One question's tool loop; returns its trace or raises Rejected (see the module docstring)."""
    offline = drawn(question["id"], tcfg.unavailable_share)
    messages = conversation(question, tcfg.system_prompt)
    sampling = OmegaConf.to_container(tcfg.sampling, resolve=True)
    calls = 0
    while True:
        body = {
            "model": tcfg.model,
            "messages": request_messages(messages),
            "tools": [SEARCH_TOOL],
            **sampling,
        }
        try:
            message, finish = parse_completion(await endpoint.complete(body))
        except Refused as e:
            raise Rejected("bad_request", str(e), messages) from None
        except MalformedResponse as e:
            raise Rejected("malformed_response", str(e), messages) from None
        turn = assistant_turn(message, calls)
        messages.append(turn)
        if finish == "length":
            raise Rejected(
                "length", "the response was cut at the token limit (finish_reason length)", messages
            )
        if not turn.get("tool_calls"):
            if final_answer(turn["content"]) is None:
                raise Rejected("no_answer", "the final turn has no 'Answer: <text>' line", messages)
            return make_trace(question, messages, f"openai:{tcfg.model}", offline)
        for call in turn["tool_calls"]:
            calls += 1
            if calls > tcfg.max_tool_calls:
                raise Rejected("max_tool_calls", f"more than {tcfg.max_tool_calls} search calls", messages)
            if call["function"]["name"] != SEARCH:
                raise Rejected("unknown_tool", f"called {call['function']['name']!r}", messages)
            try:
                query, k = parse_search_call(call)
            except ToolCallError as e:
                raise Rejected("bad_tool_arguments", str(e), messages) from None
            if "k" not in json.loads(call["function"]["arguments"]):
                k = tcfg.k
            if offline:
                content = UNAVAILABLE
            else:
                # Synchronous: a search takes milliseconds, a completion seconds.
                content = render_results(retriever.search(query, k, question.get("world")))
            messages.append({"role": "tool", "tool_call_id": call["id"], "name": SEARCH, "content": content})


def run_openai(
    questions: list[dict], retriever: Retriever, tcfg: DictConfig, cache_dir: Path, write, stats: Counter
) -> list[str]:
    """Trace `questions`, `tcfg.client.concurrency` at a time, calling `write(question, trace)` or
    `write(question, None, rejected)` as each finishes. Returns '<id>: <error>' for each question whose
    requests kept failing; those are written nowhere, so a re-run retries them."""
    failures: list[str] = []

    async def main() -> None:
        endpoint = Endpoint(tcfg, cache_dir, stats)
        pending = iter(questions)

        async def worker() -> None:
            for question in pending:  # one shared iterator: each question goes to exactly one worker
                try:
                    trace = await openai_trace(question, endpoint, retriever, tcfg)
                except Rejected as e:
                    write(question, None, e)
                except EndpointError as e:
                    failures.append(f"{question['id']}: {e}")
                else:
                    write(question, trace)

        async with endpoint.client:
            await asyncio.gather(*(worker() for _ in range(tcfg.client.concurrency)))

    asyncio.run(main())
    return failures
