"""A hostile HTTP teacher server (real sockets on loopback): redirects, trickling, huge and malformed bodies.

Each behaviour must end as a counted fault (or one TeacherError) within a bounded time, never as a
traceback out of `complete`, never in the cache, and the API key never leaves `base_url`.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from fake_openai import FakeOpenAI

from edge_distill.errors import TeacherError
from edge_distill.teachers.cache import TeacherCache
from edge_distill.teachers.http import HttpTeacher
from edge_distill.teachers.live import Sampling

SAMPLING = Sampling(temperature=0.7, max_tokens=16, seed=3)
KEY = "sk-secret-do-not-forward"


def make(url: str, tmp_path: Path | None = None, **kw: Any) -> HttpTeacher:
    args: dict[str, Any] = dict(
        base_url=url, timeout_s=1.0, max_retries=0, backoff_s=0.01, concurrency=1, progress=False,
        api_key_env="HOSTILE_TEST_KEY",
    )  # fmt: skip
    args["cache"] = TeacherCache(tmp_path / "cache.sqlite") if tmp_path is not None else None
    args.update(kw)
    return HttpTeacher("m", **args)


def _second_loopback_host() -> str:
    """127.0.0.2 where the loopback /8 is routed (Linux); otherwise another port on 127.0.0.1 will do."""
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.2", 0))
        return "127.0.0.2"
    except OSError:
        return "127.0.0.1"


def send(
    h: BaseHTTPRequestHandler, status: int, payload: bytes, headers: dict[str, str] | None = None
) -> None:
    h.send_response(status)
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(payload)))
    h.end_headers()
    h.wfile.write(payload)


# ---------------------------------------------------------------------------------------------- redirects
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_fault_and_the_key_never_reaches_the_other_host(
    status: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOSTILE_TEST_KEY", KEY)
    with FakeOpenAI(host=_second_loopback_host()) as other, FakeOpenAI() as origin:
        target = f"{other.url}/completions"

        def redirect(h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
            send(h, status, b"", {"Location": target})

        origin.schedule = ["ok", redirect]  # the first call proves the server works, so the run goes on
        t = make(origin.url, tmp_path)
        out = t.complete(["a", "b"], 1, SAMPLING)
        assert out[0][0].error is None and out[1][0].error is not None
        assert out[1][0].error.startswith(f"redirect: HTTP {status} to '{target}'")
        assert t.report()["faults"] == {"redirect": 1} and t.report()["requests"] == 2
        assert [r["auth"] for r in origin.log] == [f"Bearer {KEY}"] * 2  # the key was set and sent...
        assert other.log == []  # ...and the other server never saw any request, key or not
        assert t.cache is not None and len(t.cache) == 1  # only the genuine answer is cached

        # a teacher that only ever redirects is stopped with the target in the message
        origin.schedule = [redirect] * 5
        with pytest.raises(TeacherError, match="is not working.*redirect: HTTP"):
            make(origin.url).complete([f"q{i}" for i in range(5)], 1, SAMPLING)
        assert other.log == []


# ---------------------------------------------------------------------------------------------- deadline
def _trickle(h: BaseHTTPRequestHandler, data: bytes, closing: threading.Event, every_s: float) -> None:
    h.wfile.flush()
    for b in data:
        if closing.wait(every_s):
            return
        try:
            h.wfile.write(bytes([b]))
            h.wfile.flush()
        except OSError:  # the client gave up: what we want
            return


@pytest.mark.parametrize("where", ["status_line", "headers", "body"])
def test_a_trickling_server_cannot_stall_past_the_deadline(where: str) -> None:
    ok = json.dumps({"choices": [{"text": "x" * 50}]}).encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(ok)}\r\n\r\n".encode()
    with FakeOpenAI() as f:

        def trickle(h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
            # one byte every 0.1 s: each socket read succeeds well inside timeout_s, the whole never does
            if where == "status_line":
                _trickle(h, head + ok, f.closing, 0.1)
                return
            h.wfile.write(head if where == "body" else head[:20])
            _trickle(h, ok if where == "body" else head[20:] + ok, f.closing, 0.1)

        f.schedule = ["ok", trickle, trickle]  # the second call is retried once, and trickles again
        t = make(f.url, timeout_s=1.0, max_retries=1)
        start = time.monotonic()
        out = t.complete(["a", "b"], 1, SAMPLING)
        wall = time.monotonic() - start
        assert out[1][0].error is not None and out[1][0].error.startswith(
            "timeout: no complete answer within 1s"
        )
        assert t.report()["retries"] == {"timeout": 1} and t.report()["faults"] == {"timeout": 1}
        # two attempts of 1 s each (the old client took > 40 s: the trickle is ~20 s per attempt)
        assert wall < 4.0, wall


def test_an_endless_header_is_a_connection_fault_not_a_stall() -> None:
    def endless(h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        h.wfile.write(b"HTTP/1.1 200 OK\r\nX-Pad: ")
        try:
            for _ in range(4096):  # 4 MiB of one header line, as fast as the socket takes it
                h.wfile.write(b"a" * 1024)
        except OSError:
            pass

    with FakeOpenAI(schedule=["ok", endless]) as f:
        t = make(f.url, timeout_s=5.0)
        start = time.monotonic()
        out = t.complete(["a", "b"], 1, SAMPLING)
        assert time.monotonic() - start < 5.0
    assert out[1][0].error is not None and out[1][0].error.startswith("connection: "), out[1][0].error


# ---------------------------------------------------------------------------------------------- size cap
def test_a_body_past_the_cap_is_refused_while_streaming_and_never_cached(tmp_path: Path) -> None:
    sent = {"bytes": 0}
    total = 64 << 20  # more than any socket buffer pair on loopback: the client must stop reading

    def huge(h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")  # no Content-Length to refuse up front
        h.end_headers()
        chunk = b'{"choices": [{"text": "' + b"a" * (1 << 20)
        try:
            while sent["bytes"] < total:
                h.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent["bytes"] += len(chunk)
        except OSError:
            pass

    def declared(h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(300 << 20))  # refused from the header alone
        h.end_headers()

    with FakeOpenAI(schedule=["ok", huge, declared]) as f:
        t = make(f.url, tmp_path, max_response_bytes=64 << 10, max_retries=2, timeout_s=5.0)
        start = time.monotonic()
        out = t.complete(["a", "b", "c"], 1, SAMPLING)
        assert time.monotonic() - start < 5.0
    errors = [row[0].error for row in out]
    assert errors[0] is None
    assert errors[1] is not None and errors[1].startswith("too_large: body passed max_response_bytes=65536")
    assert errors[2] is not None and errors[2].startswith(f"too_large: Content-Length {300 << 20} exceeds")
    assert t.report()["faults"] == {"too_large": 2} and t.report()["retries"] == {}  # a cap is not retried
    assert sent["bytes"] < total // 2, sent  # the client stopped reading; it did not buffer the whole body
    assert t.cache is not None and len(t.cache) == 1


def test_a_compressed_body_is_refused_rather_than_inflated() -> None:
    import gzip

    bomb = gzip.compress(b" " * (8 << 20))  # ~8 kB on the wire, 8 MiB inflated

    def gz(h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        send(h, 200, bomb, {"Content-Encoding": "gzip", "Content-Type": "application/json"})

    with FakeOpenAI(schedule=["ok", gz]) as f:
        t = make(f.url)
        out = t.complete(["a", "b"], 1, SAMPLING)
        assert f.log[1]["path"] == "/v1/completions"
    assert out[1][0].error is not None and out[1][0].error.startswith("bad_response: Content-Encoding 'gzip'")


# ---------------------------------------------------------------------------------------------- shapes
DEEP = b"[" * 100_000 + b"]" * 100_000
MALFORMED: list[tuple[str, bytes, str]] = [
    ("empty body", b"", "completions"),
    ("html", b"<html>502 Bad Gateway</html>", "completions"),
    ("not utf-8", b'{"choices": [{"text": "\xff\xfe"}]}', "completions"),
    ("lone surrogate escape", b'{"choices": [{"text": "a\\ud800b"}]}', "completions"),
    ("surrogate bytes", b'{"choices": [{"text": "a\xed\xa0\x80b"}]}', "completions"),
    ("trailing garbage", b'{"choices": [{"text": "a"}]} extra', "completions"),
    ("nesting bomb", DEEP, "completions"),
    ("nested bomb in text", b'{"choices": [{"text": ' + DEEP + b"}]}", "completions"),
    ("top-level list", b"[]", "completions"),
    ("top-level string", b'"hello"', "completions"),
    ("top-level null", b"null", "completions"),
    ("top-level number", b"1e999", "completions"),
    ("no choices", b"{}", "completions"),
    ("choices null", b'{"choices": null}', "completions"),
    ("choices object", b'{"choices": {"0": {"text": "a"}}}', "completions"),
    ("choices string", b'{"choices": "a"}', "completions"),
    ("choices empty", b'{"choices": []}', "completions"),
    ("choice is int", b'{"choices": [1]}', "completions"),
    ("choice is null", b'{"choices": [null]}', "completions"),
    ("choice is list", b'{"choices": [["a"]]}', "completions"),
    ("choice without text", b'{"choices": [{}]}', "completions"),
    ("text is int", b'{"choices": [{"text": 5}]}', "completions"),
    ("text is null", b'{"choices": [{"text": null}]}', "completions"),
    ("text is list", b'{"choices": [{"text": ["a"]}]}', "completions"),
    ("text is object", b'{"choices": [{"text": {"a": 1}}]}', "completions"),
    ("finish_reason is int", b'{"choices": [{"text": "a", "finish_reason": 5}]}', "completions"),
    ("index is string", b'{"choices": [{"text": "a", "index": "0"}]}', "completions"),
    ("index is bool", b'{"choices": [{"text": "a", "index": true}]}', "completions"),
    ("index negative", b'{"choices": [{"text": "a", "index": -1}]}', "completions"),
    ("index huge", b'{"choices": [{"text": "a", "index": ' + b"9" * 5000 + b"}]}", "completions"),
    ("index past n", b'{"choices": [{"text": "a", "index": 1}]}', "completions"),
    ("more choices than n", b'{"choices": [{"text": "a"}, {"text": "b"}]}', "completions"),
    ("100 000 choices", b'{"choices": [' + b",".join([b'{"text": "a"}'] * 100_000) + b"]}", "completions"),
    ("usage is string", b'{"choices": [{"text": "a"}], "usage": "lots"}', "completions"),
    ("usage negative", b'{"choices": [{"text": "a"}], "usage": {"completion_tokens": -3}}', "completions"),
    ("usage float", b'{"choices": [{"text": "a"}], "usage": {"completion_tokens": 7.5}}', "completions"),
    ("chat message is string", b'{"choices": [{"message": "hi"}]}', "chat"),
    ("chat message is null", b'{"choices": [{"message": null}]}', "chat"),
    ("chat message is list", b'{"choices": [{"message": ["hi"]}]}', "chat"),
    ("chat content null", b'{"choices": [{"message": {"role": "assistant", "content": null}}]}', "chat"),
    ("chat content int", b'{"choices": [{"message": {"content": 1}}]}', "chat"),
    ("chat no message", b'{"choices": [{"text": "completions shape"}]}', "chat"),
]
# n = 2 in one request: the index rules across choices
MALFORMED_N2: list[tuple[str, bytes]] = [
    ("mixed-type index", b'{"choices": [{"index": 0, "text": "a"}, {"index": "1", "text": "b"}]}'),
    ("some with index", b'{"choices": [{"index": 0, "text": "a"}, {"text": "b"}]}'),
    ("duplicate index", b'{"choices": [{"index": 1, "text": "a"}, {"index": 1, "text": "b"}]}'),
    ("index float", b'{"choices": [{"index": 0, "text": "a"}, {"index": 1.0, "text": "b"}]}'),
    ("three for n=2", b'{"choices": [{"text": "a"}, {"text": "b"}, {"text": "c"}]}'),
]


def _raw(payload: bytes) -> Any:
    def respond(h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        send(h, 200, payload, {"Content-Type": "application/json"})

    return respond


@pytest.mark.parametrize("name, payload, endpoint", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_every_malformed_body_is_a_counted_bad_response(
    name: str, payload: bytes, endpoint: str, tmp_path: Path
) -> None:
    with FakeOpenAI(schedule=["ok", _raw(payload)]) as f:
        t = make(f.url, tmp_path, endpoint=endpoint, max_response_bytes=32 << 20)
        out = t.complete(["a", "b"], 1, SAMPLING)
    assert out[0][0].error is None
    assert out[1][0].error is not None and out[1][0].error.startswith("bad_response: "), out[1][0].error
    assert len(out[1][0].error) < 400  # the stored error is short, whatever the body held
    assert t.report()["faults"] == {"bad_response": 1}
    assert t.cache is not None and len(t.cache) == 1 and t.cache.fault_counts() == {"bad_response": 1}


@pytest.mark.parametrize("name, payload", MALFORMED_N2, ids=[m[0] for m in MALFORMED_N2])
def test_malformed_choice_lists_for_n_are_counted_bad_responses(name: str, payload: bytes) -> None:
    with FakeOpenAI(schedule=["ok", _raw(payload)], honor_n=True) as f:
        t = make(f.url, supports_n=True)
        out = t.complete(["a", "b"], 2, SAMPLING)
    assert [c.error for c in out[0]] == [None, None]
    assert all(c.error is not None and c.error.startswith("bad_response: ") for c in out[1])
    assert t.report()["faults"] == {"bad_response": 2}


def test_well_formed_variants_are_accepted() -> None:
    # unordered indices, extra fields, no usage, and a server that answers n=2 with fewer choices
    bodies = [
        b'{"choices": [{"index": 1, "text": "B", "logprobs": null}, {"index": 0, "text": "A"}], "id": "x"}',
        b'{"choices": [{"text": "only one"}], "usage": null}',
    ]
    with FakeOpenAI(schedule=[_raw(b) for b in bodies]) as f:
        t = make(f.url, supports_n=True)
        out = t.complete(["a", "b"], 2, SAMPLING)
    assert [c.text for c in out[0]] == ["A", "B"]
    assert out[1][0].text == "only one" and out[1][1].error is None  # the missing sample was asked for alone
    assert t.report()["faults"] == {}


@pytest.mark.parametrize("url", ["http://", "127.0.0.1:8000/v1", "ftp://host/v1", "http://[::1:80/v1",
                                 "http://127.0.0.1:99999/v1", "file:///etc/passwd"])  # fmt: skip
def test_a_base_url_that_is_not_an_http_url_is_one_clear_error(url: str) -> None:
    with pytest.raises(TeacherError, match="teacher.http.base_url: .* is not an http:// or https:// URL"):
        HttpTeacher("m", base_url=url, cache=None)


def test_error_texts_from_the_server_are_bounded() -> None:
    def verbose(h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        send(h, 400, b"E" * (1 << 20))  # a 1 MiB error page

    with FakeOpenAI(schedule=["ok", verbose]) as f:
        out = make(f.url).complete(["a", "b"], 1, SAMPLING)
    err = out[1][0].error
    assert err is not None and err.startswith("http_400: EEE") and len(err) <= 500


# ---------------------------------------------------------------------------------------------- terminal
HOSTILE_TEXT = "bad key\x1b]0;pwned\x07\x1b[2J\r\u202eevil\x9b31m"


def test_control_characters_from_the_server_never_reach_the_terminal(tmp_path: Path) -> None:
    """An HTTP 401 body with an OSC title sequence, a screen clear, a carriage return, a bidi override and
    a C1 CSI: the error (and the CLI's one line, logged or printed) carries none of them."""
    from click.testing import CliRunner

    from edge_distill.cli import main

    def unauthorized(h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        send(h, 401, HOSTILE_TEXT.encode())

    with FakeOpenAI(schedule=[unauthorized] * 4) as f:
        with pytest.raises(TeacherError) as e:
            make(f.url).complete(["a"], 1, SAMPLING)
        args = [
            "teach", f"runs_dir={tmp_path}", "name=t", "data.limit_train=2", "teacher.backend=http",
            f"teacher.http.base_url={f.url}", "teacher.http.api_key_env=null", "teacher.cache=null",
            "teacher.strategies=[cot]",
        ]  # fmt: skip
        res = CliRunner().invoke(main, args)
    assert "bad key?]0;pwned??[2J?" in str(e.value) and "?evil?31m" in str(e.value)
    assert res.exit_code == 2 and "authentication failed" in res.output, res.output
    [line] = [x for x in res.output.split("\n") if x.startswith("error:")]  # tqdm's own bar writes \r
    assert "bad key?]0;pwned??[2J??evil?31m" in line
    assert not [c for c in line if ord(c) < 32 or 0x7F <= ord(c) < 0xA0 or c == "\u202e"], repr(line)


def test_printable_keeps_text_and_layout() -> None:
    from edge_distill.errors import printable

    assert printable("line 1\r\nline\t2 — ünïcode ✓") == "line 1\nline\t2 — ünïcode ✓"
    assert printable("x" * 50, 10) == "x" * 10 + "..." and printable("ab" * 10, 4, keep_end=True) == "...abab"
