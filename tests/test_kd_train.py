"""`train.kd` in training (objectives/kd_train.py) on tiny Llamas that share a tokenizer: the loss hook equals
a full-logit reference, packing and gradient accumulation leave it exact (like weighted_ce), offline teacher
rows are aligned to the student's tokens, on-policy batches are the student's own samples scored by the
teacher, and the vocabulary contract is checked by content.

Tolerances: the loss math is compared with a float64 reference (bound as in test_kd.py); whole-model
comparisons (packed vs unpacked, micro-batch splits) differ by float32 rounding inside the model, bounded by
`model_tol`: a dot product of length H carries a relative error up to H·eps32, once per layer and pass
(forward, backward), applied normwise (relative to the largest entry of the compared tensor).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edge_distill.config import KdConfig
from edge_distill.errors import ConfigError
from edge_distill.objectives.examples import Example, ExampleCollator
from edge_distill.objectives.kd_train import KDLoss, align_topk, attach_topk, load_teacher
from edge_distill.packing import PackedCollator, example_spans
from edge_distill.teachers.topk import TopK, from_logits_rows
from tests.test_kd import f32_bound, ref_divergence

EPS32 = torch.finfo(torch.float32).eps
HIDDEN, LAYERS = 256, 2  # tests/tiny_models.build_tiny_llama defaults


def model_tol(reference: torch.Tensor) -> float:
    return 16 * EPS32 * HIDDEN * LAYERS * float(reference.detach().abs().max())


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from edge_distill.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    from tests.tiny_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-teacher"), seed=1)


def _model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def _examples(tok):
    """SFT, CasCoD-like two-level and EDIT-like signed weights (as tests/test_perf_loss.py)."""

    def ids(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    out = []
    p, r = ids("Q: What is 2+3?\nA:"), ids(" 2+3=5. The answer is 5.") + [tok.eos_token_id]
    out.append(Example(p + r, [0.0] * len(p) + [1.0 / len(r)] * len(r)))
    p, r, a = ids("Q: Tom has 12 apples, eats 4.\nA:"), ids(" 12-4=8."), ids(" The answer is 8.")
    out.append(Example(p + r + a, [0.0] * len(p) + [0.9 / len(r)] * len(r) + [0.1 / len(a)] * len(a)))
    p, r = ids("Q: Half of 9?\nA:"), ids(" 9/2=4.5 so 5")
    out.append(Example(p + r, [0.0] * len(p) + [-0.025] * (len(r) - 2) + [1.0, 1.0]))
    return out


def _with_teacher_topk(examples, teacher, k=6):
    """Examples whose kd rows are the teacher's own top-k on them (row t predicts token t)."""
    out = []
    for ex in examples:
        with torch.no_grad():
            logits = teacher(input_ids=torch.tensor([ex.input_ids])).logits[0].double()
        rec = from_logits_rows(ex.input_ids[1:], logits[:-1].numpy(), k)
        ids = np.vstack([np.full((1, k), -1, np.int32), rec.ids])
        lps = np.vstack([np.full((1, k), -np.inf, np.float16), rec.logprobs])
        ids[np.asarray(ex.weights) <= 0] = -1  # as attach_topk leaves them: weighted tokens only
        out.append(Example(ex.input_ids, ex.weights, kd=(ids, lps)))
    return out


def kd_cfg(**kw):
    base = {"enabled": True, "weight": 0.4, "source": "offline"}
    return KdConfig.model_validate({**base, **kw})


def reference_loss(model, teacher, batch, cfg: KdConfig, nll_cap=None):
    """Σ w·[(1 − λm)·CE + λm·D] from the models' full logits, the loss math in float64."""
    ids, w = batch["input_ids"], batch["weights"][:, 1:].double()
    extra = {k: batch[k] for k in ("position_ids", "attention_mask") if k in batch}
    logits = model(input_ids=ids, use_cache=False, **extra).logits[:, :-1].double()
    n = logits.shape[-1]
    ce = F.cross_entropy(logits.reshape(-1, n), ids[:, 1:].reshape(-1), reduction="none").view_as(w)
    if nll_cap is not None:
        w = w * ~((w < 0) & (ce > nll_cap))
    tau = cfg.temperature
    logq = F.log_softmax(logits / tau, -1)
    if teacher is not None:
        with torch.no_grad():
            t = teacher(input_ids=ids, use_cache=False, **extra).logits[:, :-1].double()
        d = ref_divergence(F.log_softmax(t / tau, -1), logq, cfg.divergence, cfg.beta)
        has = torch.ones_like(w, dtype=torch.bool)
    else:
        kd_ids, kd_lps = batch["kd_ids"][:, 1:].long(), batch["kd_logprobs"][:, 1:].double()
        has = (kd_ids >= 0).any(-1)
        q = torch.softmax(logits, -1)
        p_top = torch.where(kd_ids >= 0, kd_lps.exp(), torch.zeros_like(kd_lps))
        q_top = q.gather(-1, kd_ids.clamp_min(0)) * (kd_ids >= 0)
        p_tail = (1 - p_top.sum(-1, keepdim=True)).clamp_min(1e-6)
        p = torch.cat([p_top, p_tail], -1)
        p = p / p.sum(-1, keepdim=True)
        qq = torch.cat([q_top, 1 - q_top.sum(-1, keepdim=True)], -1)
        assert tau == 1.0
        live = qq > 0  # empty slots: log 0 with a 0/0 gradient is kept out of the graph
        logqq = torch.where(
            live, torch.where(live, qq, torch.ones_like(qq)).log(), torch.full_like(qq, -math.inf)
        )
        d = ref_divergence(p.log(), logqq, cfg.divergence, cfg.beta)
    m = (has & (w > 0)).double()
    lam = cfg.weight
    d = torch.where(m > 0, d, torch.zeros_like(d))
    return (w * ((1 - lam * m) * ce + lam * m * d)).sum()


def _grads(loss, model):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.autograd.grad(loss, params)


@pytest.mark.parametrize("source", ["online", "offline"])
@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd"])
def test_the_hook_equals_the_full_logit_reference(tiny_model_dir, teacher_dir, tok, source, divergence):
    model, teacher = _model(tiny_model_dir), _model(teacher_dir).eval()
    examples = _examples(tok)
    cfg = kd_cfg(
        source=source, divergence=divergence, beta=0.3, teacher_model=str(teacher_dir), temperature=1.0
    )
    if source == "offline":
        examples = _with_teacher_topk(examples, teacher)
    batch = ExampleCollator(tok.pad_token_id)(examples)
    hook = KDLoss(cfg, len(tok), teacher=teacher if source == "online" else None)
    got, _ = hook(model, batch, 3.0)
    ref = reference_loss(model, teacher if source == "online" else None, batch, cfg, 3.0)
    torch.testing.assert_close(
        got.double(), ref, rtol=0, atol=model_tol(ref) + f32_bound(torch.full((1, len(tok)), 10.0))
    )
    for a, b in zip(_grads(got, model), _grads(ref, model), strict=True):
        torch.testing.assert_close(a.double(), b.double(), rtol=0, atol=model_tol(b))


@pytest.mark.parametrize("source", ["online", "offline"])
def test_packed_batches_give_the_unpacked_losses_and_gradient(tiny_model_dir, teacher_dir, tok, source):
    model, teacher = _model(tiny_model_dir), _model(teacher_dir).eval()
    examples = _examples(tok)
    if source == "offline":
        examples = _with_teacher_topk(examples, teacher)
    cfg = kd_cfg(source=source, teacher_model=str(teacher_dir), divergence="jsd")
    hook = KDLoss(cfg, len(tok), teacher=teacher if source == "online" else None)
    unpacked = sum(hook(model, ExampleCollator(tok.pad_token_id)([ex]), 2.0)[0] for ex in examples)
    packed_batch = PackedCollator()(examples)
    assert len(example_spans(packed_batch["position_ids"])) == 3
    packed, _ = hook(model, packed_batch, 2.0)
    torch.testing.assert_close(packed, unpacked, rtol=0, atol=model_tol(unpacked))
    for a, b in zip(_grads(packed, model), _grads(unpacked, model), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=model_tol(b))


def test_lambda_zero_trains_exactly_like_weighted_ce(tiny_model_dir, tok):
    from edge_distill.objectives.losses import weighted_ce

    model = _model(tiny_model_dir)
    batch = ExampleCollator(tok.pad_token_id)(_examples(tok))
    got, _ = KDLoss(kd_cfg(weight=0.0), len(tok))(model, batch, 3.0)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    ref = weighted_ce(out.logits, batch["input_ids"], batch["weights"], 3.0)
    torch.testing.assert_close(got, ref, rtol=0, atol=model_tol(ref))
    for a, b in zip(_grads(got, model), _grads(ref, model), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=model_tol(b))


# ------------------------------------------------------------------------------------------ Trainer: accumulation
FAST = {"precision": "fp32", "logging_steps": 1, "warmup_steps": 0, "save_steps": 1000, "lora": {"dropout": 0.0},
        "group_by_length": False}  # fmt: skip


class _GradCapture:
    def __new__(cls):
        from transformers import TrainerCallback

        class Capture(TrainerCallback):
            grads: dict = {}

            def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
                if not self.grads:
                    self.grads = {
                        n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad
                    }

        return Capture()


@pytest.mark.slow
@pytest.mark.parametrize("source", ["online", "offline"])
def test_gradient_is_exact_under_accumulation_and_packing(tiny_model_dir, teacher_dir, tok, tmp_path, source):
    """One optimizer step, however split into micro-batches (uneven 2 + 1 included) and packed or not, gives
    the same gradient: the hook's loss is a sum over the micro-batch that the trainer divides by the step's
    example count, exactly like weighted_ce."""
    from edge_distill.training import train

    teacher = _model(teacher_dir).eval()
    examples = _examples(tok)
    if source == "offline":
        examples = _with_teacher_topk(examples, teacher)
    cfg = kd_cfg(source=source, teacher_model=str(teacher_dir), divergence="forward_kl", weight=0.7)
    grads = []
    for bs, accum, packing in [(3, 1, False), (2, 2, False), (1, 3, False), (2, 2, True)]:
        cap = _GradCapture()
        hook = KDLoss(cfg, len(tok), teacher=teacher if source == "online" else None)
        train(tiny_model_dir, examples, tmp_path / f"b{bs}a{accum}{packing}", max_steps=1, batch_size=bs,
              grad_accum=accum, packing=packing, max_grad_norm=0.0, callbacks=[cap], loss_fn=hook, **FAST)  # fmt: skip
        grads.append(cap.grads)
    assert grads[0] and any(g.abs().sum() > 0 for g in grads[0].values())  # LoRA A starts with 0 grad
    for other in grads[1:]:
        for name, g in grads[0].items():
            torch.testing.assert_close(other[name], g, rtol=0, atol=model_tol(g), msg=name)


# ------------------------------------------------------------------------------------------ offline alignment
def test_alignment_takes_teacher_rows_only_where_token_and_predecessor_match():
    k = 3
    teacher_tokens = [50, 11, 12, 13, 14, 99, 15, 16]
    rec = TopK(
        np.array(teacher_tokens),
        np.arange(len(teacher_tokens) * k).reshape(-1, k),
        -np.ones((len(teacher_tokens), k)),
    )
    # student: prompt [1, 2], tag 7, then " 11 12 13 14" (teacher wrote 50 first: "\n" vs " "), 88, 15, 16, eos 3
    ids = [1, 2, 7, 11, 12, 13, 14, 88, 15, 16, 3]
    w = [0, 0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    rows, lps, filled = align_topk(ids, w, rec)
    got = {t: int(rows[t, 0]) // k for t in range(len(ids)) if rows[t, 0] >= 0}
    # 11 has no matching predecessor (7 vs 50); 12..14 do; 15 follows 88 vs 99 (no); 16 follows 15 (yes)
    assert got == {4: 2, 5: 3, 6: 4, 9: 7} and filled == 4
    assert np.isneginf(lps[3]).all()
    w[5] = -0.5  # an unlikelihood token never gets teacher rows
    assert 5 not in {t for t in range(len(ids)) if align_topk(ids, w, rec)[0][t, 0] >= 0}


def test_attach_uses_each_examples_sample_and_reports_coverage(tok):
    from edge_distill.objectives.cascod import build_cascod_examples
    from edge_distill.types import Sample, Strategy

    samples = [
        Sample(
            "p1",
            "Tom has 3 apples and buys 2. How many?",
            "5",
            Strategy.COT,
            "3 + 2 = 5 apples.",
            meta={"topk": "a"},
        ),
        Sample("p2", "What is 6 times 7?", "42", Strategy.POT, "answer = 6 * 7", meta={"topk": "b"}),
        Sample("p3", "What is 1+1?", "2", Strategy.COT, "1 + 1 = 2.", source="student"),  # SIKeD: no record
    ]

    def record(text):  # the teacher generated the text after "Solution:\n"
        t = tok("\n" + text, add_special_tokens=False)["input_ids"]
        return TopK(np.array(t), np.tile(np.array(t)[:, None], (1, 2)), np.full((len(t), 2), -0.1))

    store = {"a": record("3 + 2 = 5 apples.\nThe answer is 5."), "b": record("answer = 6 * 7")}
    examples, _ = build_cascod_examples(tok, samples, alpha=0.3, max_length=512)
    assert [ex.sample for ex in examples] == [0, 0, 2, 2, 1]
    examples, stats = attach_topk(examples, samples, SimpleNamespace(get=store.get))
    assert stats["kd_examples_with_topk"] == 3 and 0 < stats["kd_coverage"] < 1
    assert examples[2].kd is None and examples[3].kd is None  # the student sample
    for ex in (examples[0], examples[1], examples[4]):
        rows = ex.kd[0]
        covered = [t for t in range(len(ex)) if rows[t, 0] >= 0]
        assert covered and all(ex.weights[t] > 0 and rows[t, 0] == ex.input_ids[t] for t in covered)


# ------------------------------------------------------------------------------------------ on-policy
def test_on_policy_batches_are_the_students_samples_scored_by_the_teacher(tiny_model_dir, teacher_dir, tok):
    model, teacher = _model(tiny_model_dir), _model(teacher_dir).eval()
    cfg = kd_cfg(
        source="online", teacher_model=str(teacher_dir), on_policy=1.0, on_policy_max_new_tokens=6, weight=0.2
    )
    hook = KDLoss(cfg, len(tok), teacher=teacher, tokenizer=tok, seed=0)
    batch = PackedCollator()(_examples(tok))
    torch.manual_seed(7)
    got, _ = hook(model, batch, None)
    assert hook.on_policy_batches == 1
    torch.manual_seed(7)
    sampled = hook.on_policy_batch(model, batch)
    assert sampled["input_ids"].shape[0] == 3
    assert torch.allclose(sampled["weights"].sum(1), torch.ones(3))
    # on-policy rows are pure divergence (λ = 1): no CE on the student's own text
    ref = reference_loss(model, teacher, sampled, kd_cfg(source="online", teacher_model="x", weight=1.0))
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=model_tol(ref) + 1e-12)
    assert all(torch.isfinite(g).all() for g in _grads(got, model))


def test_kd_config_rules():
    assert KdConfig().enabled is False
    with pytest.raises(ValueError, match="teacher_model"):
        KdConfig(enabled=True, source="online")
    with pytest.raises(ValueError, match="source=online"):
        KdConfig(enabled=True, on_policy=0.5)
    with pytest.raises(ValueError):
        KdConfig(enabled=True, beta=1.0)


# ------------------------------------------------------------------------------------------ vocabulary contract
def test_online_teacher_with_padded_embedding_is_sliced_and_a_foreign_tokenizer_is_refused(
    tiny_model_dir, teacher_dir, tok, tmp_path
):
    padded = _model(teacher_dir)
    padded.resize_token_embeddings(len(tok) + 7)  # e.g. 49152 tokens in 49159 rows
    with torch.no_grad():
        padded.get_output_embeddings().weight[len(tok) :] = 30.0  # would dominate any unsliced softmax
    padded.save_pretrained(tmp_path / "padded")
    tok.save_pretrained(tmp_path / "padded")
    loaded = load_teacher(tmp_path / "padded", tok, "fp32")
    assert loaded.get_output_embeddings().weight.shape[0] == len(tok) + 7
    model = _model(tiny_model_dir)
    batch = ExampleCollator(tok.pad_token_id)(_examples(tok))
    cfg = kd_cfg(source="online", teacher_model="x", weight=1.0)
    a, _ = KDLoss(cfg, len(tok), teacher=loaded)(model, batch, None)
    b, _ = KDLoss(cfg, len(tok), teacher=load_teacher(teacher_dir, tok, "fp32"))(model, batch, None)
    torch.testing.assert_close(a, b, rtol=0, atol=model_tol(b))  # the padding rows are sliced off
    with torch.no_grad():  # and they would matter: unsliced, they hold most of the teacher's mass
        full = loaded(input_ids=batch["input_ids"]).logits.softmax(-1)
    assert float(full[..., len(tok) :].sum(-1).max()) > 0.9
    from tests.tiny_models import build_tiny_tokenizer

    other = build_tiny_tokenizer(vocab_size=300)
    with pytest.raises(
        ConfigError, match=r"teacher's tokenizer .* is not the student's .*: 512 vs 3\d\d tokens"
    ):
        load_teacher(teacher_dir, other, "fp32")


def test_the_shipped_kd_config_validates():
    from edge_distill.config import load_config

    cfg = load_config("configs/kd-llamacpp-server.yaml")
    assert cfg.train.kd.enabled and cfg.train.kd.source == "offline" and cfg.teacher.backend == "http"


DDP_WORKER = """
import sys, torch
from transformers import AutoModelForCausalLM
from edge_distill.config import KdConfig
from edge_distill.models import load_tokenizer
from edge_distill.objectives.kd_train import KDLoss
from edge_distill.training import train
from tests.test_kd_train import _GradCapture, _examples, _with_teacher_topk

model_dir, teacher_dir, out_dir, bs, source = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
tok = load_tokenizer(model_dir)
teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32).eval()
examples = _examples(tok)[:2]
if source == "offline":
    examples = _with_teacher_topk(examples, teacher)
cfg = KdConfig(enabled=True, weight=0.6, source=source, teacher_model=teacher_dir, divergence="reverse_kl")
hook = KDLoss(cfg, len(tok), teacher=teacher if source == "online" else None)

cap = _GradCapture()
train(model_dir, examples, out_dir, max_steps=1, batch_size=bs, max_grad_norm=0.0, lora={"dropout": 0.0},
      group_by_length=False, precision="fp32", loss_fn=hook, callbacks=[cap])
import torch.distributed as dist
if not dist.is_initialized() or dist.get_rank() == 0:
    torch.save({"world": dist.get_world_size() if dist.is_initialized() else 1, "grads": cap.grads}, out_dir + "/grads.pt")
"""


@pytest.mark.slow
@pytest.mark.parametrize("source", ["online", "offline"])
def test_ddp_two_ranks_give_the_single_process_gradient(tiny_model_dir, teacher_dir, tmp_path, source):
    """torchrun, 2 CPU ranks x batch 1 == 1 process x batch 2, with the KD hook as the loss (each rank runs
    its own online teacher), as tests/test_training.py checks for weighted CE."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from edge_distill.teachers.llamacpp import free_port

    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": root}
    runs = {"single": [sys.executable, str(script)], "ddp": [sys.executable, "-m", "torch.distributed.run",
            "--nproc_per_node", "2", "--master_port", str(free_port()), str(script)]}  # fmt: skip
    grads = {}
    for name, cmd in runs.items():
        out = tmp_path / name
        out.mkdir()
        bs = "2" if name == "single" else "1"
        args = [str(tiny_model_dir), str(teacher_dir), str(out), bs, source]
        proc = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=1800, cwd=root)
        assert proc.returncode == 0, proc.stderr[-3000:]
        grads[name] = torch.load(out / "grads.pt")
    assert grads["single"]["world"] == 1 and grads["ddp"]["world"] == 2
    for k, g in grads["single"]["grads"].items():
        torch.testing.assert_close(grads["ddp"]["grads"][k], g, rtol=0, atol=model_tol(g), msg=k)
