"""The one place that decides whether an OpenAI-compatible completion body is well formed.

A remote server is untrusted: its body may be anything (a proxy's HTML page, `{"choices": [1]}`, a chat
`message` that is a string, a million choices, JSON nested 100 000 deep). Every malformed shape raises
`BadResponse` with a short, printable reason; nothing else escapes. The body size is capped by the caller
before it gets here, and pydantic's JSON parser (jiter) has its own recursion limit, so validation is
bounded in time and memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from edge_distill.teachers.live import Generation

if TYPE_CHECKING:
    from edge_distill.teachers.topk import PieceMap

__all__ = ["BadResponse", "parse_completion_body"]

# More choices than any sane `n`: refused before per-choice work (a body of 8 MiB could hold ~800 000 `{}`).
MAX_CHOICES = 256


class BadResponse(Exception):
    """The body is not a completion we can use (retryable: a proxy hiccup often returns garbage once)."""


class _Strict(BaseModel):
    # strict: "1" is not an index and 7.0 is not a token count; unknown fields are the server's business
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class _Message(_Strict):
    content: str


class _Choice(_Strict):
    index: int | None = Field(default=None, ge=0)
    text: str | None = None
    message: _Message | None = None
    finish_reason: str | None = None
    logprobs: Any = None  # validated below, only when asked for


# `logprobs` of a choice (offline distillation, teachers/topk.py). Bounded: a token list longer than any
# max_tokens, or more alternatives per token than any k, is a malformed body.
MAX_LOGPROB_TOKENS = 1 << 16
MAX_ALTERNATIVES = 128


class _Alternative(_Strict):
    token: str
    logprob: float


class _ChatToken(_Strict):
    token: str
    logprob: float
    top_logprobs: list[_Alternative] = Field(default_factory=list, max_length=MAX_ALTERNATIVES)


class _ChatLogprobs(_Strict):
    content: list[_ChatToken] = Field(max_length=MAX_LOGPROB_TOKENS)


class _CompletionLogprobs(_Strict):
    tokens: list[str] = Field(max_length=MAX_LOGPROB_TOKENS)
    top_logprobs: list[dict[str, float] | None] | None = Field(default=None, max_length=MAX_LOGPROB_TOKENS)

    def model_post_init(self, _ctx: Any) -> None:
        if any(top is not None and len(top) > MAX_ALTERNATIVES for top in self.top_logprobs or []):
            raise ValueError(f"more than {MAX_ALTERNATIVES} alternatives for one token")


class _Usage(_Strict):
    completion_tokens: int | None = Field(default=None, ge=0)


class _Body(_Strict):
    # items validated in a second step: pydantic checks a list's length only after validating every item,
    # and a million small choices would cost seconds of CPU per hostile response
    choices: list[Any] = Field(min_length=1, max_length=MAX_CHOICES)
    usage: _Usage | None = None


_CHOICES: TypeAdapter[list[_Choice]] = TypeAdapter(list[_Choice])


def _first_error(e: ValidationError) -> str:
    errs = e.errors(include_url=False, include_input=False)
    first = errs[0]
    loc = ".".join(str(p) for p in first["loc"]) or "body"
    more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"{loc}: {first['msg']}{more}"[:200]


def parse_completion_body(
    raw: bytes,
    *,
    endpoint: Literal["completions", "chat"],
    n: int,
    topk: int = 0,
    pieces: PieceMap | None = None,
) -> list[Generation]:
    """1..n Generations, ordered by choice index, from a raw JSON body; BadResponse for any other shape.

    Choices carry either all an `index` (distinct, < n) or none (then their order is used); a server that
    returns fewer than n is fine (the caller asks for the rest), more than n is not. With `topk` > 0 every
    choice must carry `logprobs` (mapped to ids by `pieces` into `Generation.topk`).
    """
    try:
        body = _Body.model_validate_json(raw)
        choices = _CHOICES.validate_python(body.choices)
    except ValidationError as e:
        if any(err["type"] == "json_invalid" for err in e.errors(include_url=False)):
            raise BadResponse(f"not JSON: {raw[:80]!r}") from None
        prefix = "" if e.title == "_Body" else "choices."
        raise BadResponse(f"unexpected shape: {prefix}{_first_error(e)}") from None
    except (RecursionError, MemoryError, ValueError) as e:  # belt and braces: never an exception out of here
        raise BadResponse(f"unparseable ({type(e).__name__})") from None
    if len(choices) > n:
        raise BadResponse(f"{len(choices)} choices for n={n}")
    indices = [c.index for c in choices]
    if all(i is not None for i in indices):
        if len(set(indices)) != len(indices) or max(indices) >= n:  # type: ignore[type-var]
            raise BadResponse(f"choice indices {indices[:8]} are not distinct values below n={n}")
        choices = sorted(choices, key=lambda c: c.index)  # type: ignore[arg-type, return-value]
    elif any(i is not None for i in indices):
        raise BadResponse("some choices have an index and some do not")
    total = body.usage.completion_tokens if body.usage is not None else None
    per_choice = total // len(choices) if total is not None else None
    gens = []
    for pos, c in enumerate(choices):
        text = c.message.content if endpoint == "chat" and c.message is not None else None
        text = c.text if endpoint == "completions" else text
        if text is None:
            field = "message.content" if endpoint == "chat" else "text"
            raise BadResponse(f"choices.{pos}: no {field} string")
        gen = Generation(text, "length" if c.finish_reason == "length" else "stop", tokens=per_choice)
        if topk:
            gen.topk = _topk(c.logprobs, text, endpoint, topk, pieces, pos)
        gens.append(gen)
    return gens


def _topk(logprobs: Any, text: str, endpoint: str, k: int, pieces: PieceMap | None, pos: int) -> Any:
    from edge_distill.teachers.topk import from_openai

    if logprobs is None:
        raise BadResponse(
            f"choices.{pos}: no logprobs (the server ignored logprobs; it cannot be an offline KD teacher)"
        )
    model = _ChatLogprobs if endpoint == "chat" else _CompletionLogprobs
    try:
        parsed = model.model_validate(logprobs)
    except (ValidationError, ValueError) as e:
        detail = _first_error(e) if isinstance(e, ValidationError) else str(e)[:200]
        raise BadResponse(f"choices.{pos}.logprobs: unexpected shape: {detail}") from None
    if pieces is None:
        raise ValueError("parse_completion_body: topk needs the shared tokenizer's PieceMap")
    record, _ = from_openai(parsed, text, pieces, k, chat=endpoint == "chat")
    return record
