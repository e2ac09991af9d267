"""How a student is decoded, as data, and the one interpreter of that data. Torch-free.

An objective describes its decoding as a plain dict (`Objective.decoding`), which the exporter writes into
every package's `prompt_template.json` under "decoding":
- `{"stages": 1}`: one generation after the student prompt (SFT, EDIT);
- `{"stages": 2, "answer_marker", "answer_join", "stage2_max_new_tokens", "skip_strategies"}`: CasCoD —
  rationale first, then `prompt + rationale.rstrip() + answer_join + answer_marker` and a short answer;
- either with `"stop_at_answer": true`: every generation also ends where its answer is complete
  (`stopping.py`). Packages exported before that key decode to EOS, as they did.
`staged_decode` runs that description over any `generate` callable, so eval and SIKeD sampling (torch) and
the device bench (llama.cpp / ORT GenAI, no torch) decode a package the way its student was trained.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from edge_distill.strategies import ANSWER_MARKER, forced_tag, parse_response
from edge_distill.types import Strategy

SINGLE_PASS: dict[str, Any] = {"stages": 1, "stop_at_answer": True}

# generate(prompts, n=..., **kwargs) -> n response texts per prompt (text after the prompt)
Generate = Callable[..., list[list[str]]]


def two_stage(
    marker: str = ANSWER_MARKER, *, answer_join: str = "\n", answer_tokens: int = 24
) -> dict[str, Any]:
    """The description of a rationale-then-answer decoding (the answer stage only writes " <N>." + EOS)."""
    return {
        "stages": 2,
        "answer_marker": marker,
        "answer_join": answer_join,
        "stage2_max_new_tokens": answer_tokens,
        # a PoT program has no answer step; a rationale that already states the answer needs none
        "skip_strategies": [Strategy.POT.value],
        "stop_at_answer": True,
    }


def answer_prompt(prompt: str, rationale_text: str, decoding: Mapping[str, Any]) -> str:
    """Stage-2 prompt: the stage-1 prompt, the rationale (trailing whitespace dropped) and the marker."""
    return prompt + rationale_text.rstrip() + decoding["answer_join"] + decoding["answer_marker"]


def _needs_answer(prompt: str, text: str, decoding: Mapping[str, Any]) -> bool:
    skip = set(decoding.get("skip_strategies", ()))
    parsed = parse_response(text).strategy
    forced = any(prompt.rstrip().endswith(forced_tag(s).strip()) for s in skip)
    return (
        not forced and (parsed is None or parsed.value not in skip) and decoding["answer_marker"] not in text
    )


def staged_decode(
    generate: Generate, prompts: list[str], decoding: Mapping[str, Any] | None, *, n: int = 1, **kwargs: Any
) -> list[list[str]]:
    """`n` full responses per prompt, decoded as `decoding` says (None: single pass).

    Two-stage responses come back whole (" [cot]: …\\nThe answer is 72."), so parsing and judging are the same
    as for single-stage students; each sampled rationale (n > 1) gets its own answer step. `generate` gets
    `stop_at_answer` as the description says (absent: False).
    """
    decoding = decoding or SINGLE_PASS
    kwargs["stop_at_answer"] = bool(decoding.get("stop_at_answer", False))
    stage1 = generate(prompts, n=n, **kwargs)
    if int(decoding.get("stages", 1)) == 1:
        return stage1
    todo = [
        (i, j)
        for i, outs in enumerate(stage1)
        for j, t in enumerate(outs)
        if _needs_answer(prompts[i], t, decoding)
    ]
    if todo:
        limit = int(decoding["stage2_max_new_tokens"])
        kw = {**kwargs, "max_new_tokens": min(limit, kwargs.get("max_new_tokens", limit))}
        stage2 = generate([answer_prompt(prompts[i], stage1[i][j], decoding) for i, j in todo], n=1, **kw)
        for (i, j), ans in zip(todo, stage2, strict=True):
            stage1[i][j] = (
                stage1[i][j].rstrip() + decoding["answer_join"] + decoding["answer_marker"] + ans[0]
            )
    return stage1
