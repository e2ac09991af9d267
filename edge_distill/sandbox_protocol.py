"""The wire between the sandbox host and its workers: length-prefixed JSON frames, and the checks
that turn a worker's result frame into a `PotResult` without ever raising.

Both sides treat the other's bytes as data: the worker checks what a program child wrote, the host
checks what a worker sent (a worker could be confused, killed half-way, or worse). Answers are capped
before `normalize_number` sees them, whatever that function does with long input.
"""

from __future__ import annotations

import json
import os
import re
import select
import struct
import time
from dataclasses import dataclass
from typing import Any

from edge_distill.answers import normalize_number

MAX_FRAME_BYTES = 1 << 20  # requests carry programs of <= 100k chars; results are tiny
MAX_ERROR_CHARS = 300
MAX_ANSWER_CHARS = 200
MAX_ANSWER_DIGITS = 100
_EXPONENT_RE = re.compile(r"[eE]\s*[-+]?\s*(\d+)")
# "ValueError: `answer` is inf", "TypeError: `ans` is a list, not a number", "the answer is not a number: 'x'"
_NOT_A_NUMBER_RE = re.compile(r"(?:(?:TypeError|ValueError): `[\w()]+` (?:is|has type)|the answer is)\b")


# The worker's error text for a program that left no answer (the rule: sandbox_worker.ANSWER_NAMES).
NO_ANSWER = "the program assigned none of `answer`, `ans`, `result` and defines no `solution()`"
# `PotResult.reason` values, besides an exception type name ("ZeroDivisionError", "SyntaxError", ...)
FAILURE_KINDS = ("timeout", "no_answer", "not_a_number", "killed", "sandbox")


@dataclass(frozen=True)
class PotResult:
    """Outcome of one program: `answer` is normalized (`answers.normalize_number`) when ok."""

    ok: bool
    answer: str | None = None
    error: str | None = None

    @property
    def reason(self) -> str | None:
        """Why there is no answer, in one word for counting: None when ok; "timeout" (CPU or wall
        clock); "no_answer" (no answer variable, no solution()); "not_a_number"; "killed" (a signal:
        memory, stack); "sandbox" (the sandbox itself failed); else the exception type the program raised."""
        if self.ok:
            return None
        text = self.error or ""
        head, sep, _ = text.partition(":")
        if text.startswith("timeout"):
            return "timeout"
        if NO_ANSWER in text:
            return "no_answer"
        if _NOT_A_NUMBER_RE.match(text):
            return "not_a_number"
        if text.startswith("killed by signal"):
            return "killed"
        if text.startswith(("sandbox", "not run")):
            return "sandbox"
        return head if sep and head.isidentifier() else "error"


# --------------------------------------------------------------------------- framing
def frame_bytes(obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj).encode()
    return struct.pack("<I", len(data)) + data


def write_frame(fd: int, obj: dict[str, Any]) -> None:
    data = frame_bytes(obj)
    while data:
        data = data[os.write(fd, data) :]


def send_frame(fd: int, obj: dict[str, Any], timeout_s: float) -> None:
    """Write one frame to a non-blocking fd, or raise TimeoutError: a worker that stopped reading its
    stdin must not block the host once the pipe buffer is full (programs can be 100k chars)."""
    data = memoryview(frame_bytes(obj))
    deadline = time.monotonic() + timeout_s
    while data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([], [fd], [], left)[1]:
            raise TimeoutError("sandbox worker stopped reading its requests")
        try:
            data = data[os.write(fd, data) :]
        except BlockingIOError:
            continue


def read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame_bytes(fd: int) -> bytes | None:
    """One length-prefixed frame from a blocking fd; None at EOF. ValueError for an oversize frame."""
    head = read_exact(fd, 4)
    if head is None:
        return None
    size = struct.unpack("<I", head)[0]
    if size > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {size} bytes (limit {MAX_FRAME_BYTES})")
    return read_exact(fd, size)


# --------------------------------------------------------------------------- results
def result_fields(obj: Any, *extra_keys: str) -> tuple[bool, str] | None:
    """(ok, value-or-error text) when `obj` is exactly {"ok": bool, "value"|"error": str, *extra_keys};
    None for anything else."""
    if not isinstance(obj, dict) or not isinstance(obj.get("ok"), bool):
        return None
    key = "value" if obj["ok"] else "error"
    text = obj.get(key)
    if not isinstance(text, str) or set(obj) != {"ok", key, *extra_keys}:
        return None
    return obj["ok"], text


def to_result(frame: Any, request_id: int) -> PotResult | None:
    """The PotResult a worker frame describes, or None if the frame is not exactly the result of
    request `request_id` (the host then kills and replaces that worker)."""
    parsed = result_fields(frame, "id")
    if parsed is None or frame["id"] != request_id:
        return None
    ok, text = parsed
    if not ok:
        return PotResult(False, error=text[:MAX_ERROR_CHARS] or "unknown error")
    return PotResult(True, answer=answer) if (answer := safe_answer(text)) else _bad_answer(text)


def safe_answer(text: str) -> str | None:
    """normalize_number, but bounded first and never raising: a result is data, not a host crash."""
    if len(text) > MAX_ANSWER_CHARS or sum(c.isdigit() for c in text) > MAX_ANSWER_DIGITS:
        return None
    if any(int(m.group(1)[:6]) > MAX_ANSWER_DIGITS for m in _EXPONENT_RE.finditer(text)):
        return None  # 1e999999 would expand to a million digits
    try:
        answer = normalize_number(text)
    except Exception:  # noqa: BLE001 - whatever the parser trips over, the program just failed
        return None
    return answer if answer is not None and len(answer) <= MAX_ANSWER_CHARS else None


def _bad_answer(text: str) -> PotResult:
    if len(text) > MAX_ANSWER_CHARS or sum(c.isdigit() for c in text) > MAX_ANSWER_DIGITS:
        why = f"longer than {MAX_ANSWER_CHARS} chars or {MAX_ANSWER_DIGITS} digits"
        return PotResult(False, error=f"the answer is {why}: {text[:40]!r}...")
    return PotResult(False, error=f"the answer is not a number: {text[:80]!r}")
