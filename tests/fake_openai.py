"""A scripted OpenAI-compatible server on loopback for the HTTP teacher tests (a real server: real sockets).

`schedule` scripts the first responses; an entry is a behaviour name or a callable(handler, body) that
writes any response at all (hostile servers). After the schedule every request is "ok".
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edge_distill.teachers.llamacpp import free_port

Behaviour = str | Callable[[BaseHTTPRequestHandler, dict[str, Any]], None]


class FakeOpenAI:
    """Answers POST /v1/completions and /v1/chat/completions; `schedule` scripts the first responses.

    Behaviours: ok, length (finish_reason=length), 500/502/429/400/401/404 (status), hang (never answers
    within the client timeout), truncated (Content-Length larger than the body), garbage (not JSON),
    empty (no choices). After the schedule every request is "ok".
    """

    def __init__(
        self,
        schedule: list[Behaviour] | None = None,
        honor_n: bool = False,
        hang_s: float = 3.0,
        host: str = "127.0.0.1",
    ):
        self.schedule = list(schedule or [])
        self.honor_n, self.hang_s = honor_n, hang_s
        self.log: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.closing = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.do_POST()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else {}
                with fake.lock:
                    what = fake.schedule.pop(0) if fake.schedule else "ok"
                    fake.log.append(
                        {
                            "path": self.path,
                            "body": body,
                            "auth": self.headers.get("Authorization"),
                            "what": what if isinstance(what, str) else getattr(what, "__name__", "custom"),
                        }
                    )
                fake.respond(self, what, body)

        self.server = ThreadingHTTPServer((host, free_port(host)), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}/v1"

    @staticmethod
    def text_for(body: dict[str, Any], j: int = 0) -> str:
        prompt = body.get("prompt") or body["messages"][-1]["content"]
        return f"echo {prompt} seed={body.get('seed')} j={j}"

    def respond(self, h: BaseHTTPRequestHandler, what: Behaviour, body: dict[str, Any]) -> None:
        if callable(what):
            what(h, body)
            return
        if what == "hang":
            self.closing.wait(self.hang_s)
            return
        if what.isdigit():
            status, payload = int(what), json.dumps({"error": {"message": f"scripted {what}"}}).encode()
        elif what == "garbage":
            status, payload = 200, b"<html>502 Bad Gateway</html>"
        elif what == "empty":
            status, payload = 200, b'{"choices": []}'
        else:
            n = int(body.get("n", 1)) if self.honor_n else 1
            chat = "messages" in body
            choices = [
                {"index": j, "finish_reason": "length" if what == "length" else "stop"}
                | (
                    {"message": {"role": "assistant", "content": self.text_for(body, j)}}
                    if chat
                    else {"text": self.text_for(body, j)}
                )
                for j in range(n)
            ]
            status, payload = (
                200,
                json.dumps({"choices": choices, "usage": {"completion_tokens": 7 * n}}).encode(),
            )
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        if what == "429":
            h.send_header("Retry-After", "0")
        if what == "truncated":
            h.send_header("Content-Length", str(len(payload) + 100))
            h.end_headers()
            h.wfile.write(payload[:20])
            return
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    def __enter__(self) -> FakeOpenAI:
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()
