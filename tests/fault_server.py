"""A real OpenAI-compatible chat server on a loopback port, with a scripted model behind it and faults
injected in front of it, for the teacher tests.

Each question (the request's first user turn) has a `Plan`: the `faults` its first request meets, one
per attempt, before the model answers it (`500`, `429` with Retry-After, `slow` past the client's timeout,
`drop` the connection, `400` on every attempt), and the assistant turns the model says, the i-th turn
answering a request with i assistant turns in it (the last one repeats: a model that never stops):
    ("search", query)         a call to search
    ("call", name, args)      any tool call, raw arguments string
    ("answer", text)          a final turn
    ("length", text)          a turn cut at the token limit
    ("malformed",)            a 200 whose body is not JSON
    ("abstain_if_down", text) "Answer: unknown" if the last tool turn says search is unavailable, else text
Every request is logged (question, turn, status, time, sha256 of its messages), so a test can count calls.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cogcore.core.tools import UNAVAILABLE

RETRY_AFTER = 1  # seconds, as a 429 asks


@dataclass
class Plan:
    turns: list[tuple]
    faults: list[str] = field(default_factory=list)


def ok(query: str, answer: str, fact: str = "") -> Plan:
    """Search once, then answer (stating `fact` first)."""
    return Plan([("search", query), ("answer", f"{fact}\nAnswer: {answer}".strip())])


class FaultServer:
    def __init__(
        self, plans: dict[str, Plan], api_key: str = "test-key", delay: float = 0.0, slow: float = 1.5
    ):
        self.plans, self.api_key, self.delay, self.slow = plans, api_key, delay, slow
        self.log: list[dict] = []
        self.attempts: dict[tuple[str, int], int] = {}
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def __enter__(self) -> FaultServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def answered(self) -> list[dict]:
        """The requests the client got an answer to (status 200)."""
        return [r for r in self.log if r["status"] == 200]

    def respond(self, request: dict) -> tuple[int, dict, bytes | None]:
        """(status, headers, body) for one request; body None drops the connection."""
        messages = request["messages"]
        question = next(m["content"] for m in messages if m["role"] == "user")
        turn = sum(m["role"] == "assistant" for m in messages)
        plan = self.plans[question]
        with self.lock:
            attempt = self.attempts[question, turn] = self.attempts.get((question, turn), 0) + 1
        fault = plan.faults[attempt - 1] if turn == 0 and attempt <= len(plan.faults) else None
        if "400" in plan.faults and turn == 0:
            fault = "400"
        entry = {"question": question, "turn": turn, "time": time.monotonic(), "fault": fault}
        entry["digest"] = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()
        if fault == "slow":  # logged now: the client gives up before the answer comes
            with self.lock:
                self.log.append({**entry, "status": "too slow"})
            time.sleep(self.slow)
        status, headers, body = self._answer(plan, turn, messages, fault)
        if fault != "slow":
            with self.lock:
                self.log.append({**entry, "status": status})
        return status, headers, body

    def _answer(self, plan: Plan, turn: int, messages: list[dict], fault: str | None):
        if fault == "500":
            return 500, {}, b'{"error": {"message": "injected 500"}}'
        if fault == "429":
            return 429, {"Retry-After": str(RETRY_AFTER)}, b'{"error": {"message": "slow down"}}'
        if fault == "400":
            return 400, {}, b'{"error": {"message": "maximum context length exceeded"}}'
        if fault == "drop":
            return 0, {}, None
        step = plan.turns[min(turn, len(plan.turns) - 1)]
        kind = step[0]
        if kind == "malformed":
            return 200, {}, b'{"id": "x", "choices": [{"message": {"role": "assist'
        message, finish = {"role": "assistant", "content": None}, "stop"
        if kind == "search":
            step = ("call", "search", json.dumps({"query": step[1]}))
        if step[0] == "call":
            call = {
                "id": f"call_{turn}",
                "type": "function",
                "function": {"name": step[1], "arguments": step[2]},
            }
            message["tool_calls"], finish = [call], "tool_calls"
        elif kind == "abstain_if_down":
            down = messages[-1]["role"] == "tool" and messages[-1]["content"] == UNAVAILABLE
            message["content"] = "Search is down.\nAnswer: unknown" if down else step[1]
        else:
            message["content"] = step[1]
            finish = "length" if kind == "length" else "stop"
        body = {
            "id": f"chatcmpl-{turn}",
            "object": "chat.completion",
            "created": 0,
            "model": "scripted",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
        return 200, {}, json.dumps(body).encode()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    self._send(401, {}, b'{"error": {"message": "invalid api key"}}')
                    return
                with server.lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                time.sleep(server.delay)
                status, headers, body = server.respond(request)
                with server.lock:
                    server.in_flight -= 1
                if body is None:  # drop: close without a response
                    self.close_connection = True
                    return
                try:
                    self._send(status, headers, body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

            def _send(self, status: int, headers: dict, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

        return Handler
