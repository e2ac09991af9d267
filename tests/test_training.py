"""Training on the tiny Llama: learning, LoRA and full fine-tuning, exact accumulation, resume, merge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForCausalLM, TrainerCallback

from edge_distill.errors import ModelError
from edge_distill.objectives.examples import Example
from edge_distill.training import merge_lora, train
from tests.fp32_tolerance import assert_fp32_close, step_terms

FAST = {
    # exactness tests compare fp32 gradients: precision=auto autocasts to bf16 on CPUs with AVX512-BF16/AMX
    # (padding then moves a row's loss by ~1e-3), so it is pinned here; bf16 has its own tests
    "precision": "fp32",
    "logging_steps": 1,
    "warmup_steps": 0,
    "save_steps": 1000,
    "lora": {"dropout": 0.0},
    "group_by_length": False,
}


def _examples(tok, pairs=(("What is 2+3?", " 5"), ("What is 4+4?", " 8"))) -> list[Example]:
    out = []
    for q, a in pairs:
        p = tok(q, add_special_tokens=False)["input_ids"]
        r = tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        out.append(Example(p + r, [0.0] * len(p) + [1.0 / len(r)] * len(r)))
    return out


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from edge_distill.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)


def _state(path):
    model = AutoModelForCausalLM.from_pretrained(path)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_lora_memorizes_and_writes_adapter(tiny_model_dir, tok, tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    r = train(
        tiny_model_dir,
        _examples(tok),
        tmp_path / "run",
        max_steps=30,
        batch_size=2,
        lr=1e-2,
        metrics_path=metrics,
        **FAST,
    )
    assert r.steps == 30 and r.finetune == "lora"
    assert r.last_loss < 0.2 * r.first_loss, r.losses
    final = tmp_path / "run" / "final"
    cfg = json.loads((final / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(tiny_model_dir.resolve())  # exporters merge from it
    assert (final / "tokenizer.json").is_file()
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [row["step"] for row in rows if "loss" in row][:3] == [1, 2, 3]
    # the adapter changed the model's outputs on the training prompt
    from edge_distill.models import load_model

    ids = torch.tensor([_examples(tok)[0].input_ids])
    base = load_model(tiny_model_dir)(ids).logits
    tuned = load_model(final)(ids).logits
    assert not torch.allclose(base, tuned, atol=1e-3)


def test_full_finetune_changes_weights_and_lowers_loss(tiny_model_dir, tok, tmp_path):
    r = train(
        tiny_model_dir,
        _examples(tok),
        tmp_path / "run",
        finetune="full",
        max_steps=20,
        batch_size=2,
        lr=1e-3,
        **FAST,
    )
    assert r.last_loss < 0.5 * r.first_loss, r.losses
    before, after = _state(tiny_model_dir), _state(r.final_dir)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) >= len(before) // 2, f"only {changed} changed"
    assert (r.final_dir / "config.json").is_file()


class _GradCapture(TrainerCallback):
    def __init__(self):
        self.grads: dict[str, torch.Tensor] = {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
        if not self.grads:
            self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("n_examples,configs", [(4, [(4, 1), (2, 2), (1, 4)]), (3, [(3, 1), (2, 2), (1, 3)])])
def test_gradient_is_exact_under_accumulation(tiny_model_dir, tok, tmp_path, n_examples, configs):
    """One optimizer step over the same examples gives the same gradient however it is split into
    micro-batches — including an uneven split (2 + 1), where a per-micro-batch mean would be wrong."""
    pairs = [("What is 2+3?", " 5"), ("Tom has 12 apples and eats 4. How many are left?", " 8 apples"),
             ("What is 10 times 10?", " The answer is 100"), ("Half of 9?", " 4.5")][:n_examples]  # fmt: skip
    examples = _examples(tok, pairs)
    grads = []
    for bs, accum in configs:
        cap = _GradCapture()
        train(tiny_model_dir, examples, tmp_path / f"b{bs}a{accum}", max_steps=1, batch_size=bs, grad_accum=accum,
              max_grad_norm=0.0, callbacks=[cap], **FAST)  # fmt: skip
        grads.append(cap.grads)
    assert grads[0]
    terms = step_terms(tiny_model_dir, (len(e.input_ids) for e in examples))
    for other in grads[1:]:
        for name, g in grads[0].items():
            assert_fp32_close(other[name], g, terms, msg=name)


def test_gradient_checkpointing_gives_the_same_lora_gradient(tiny_model_dir, tok, tmp_path):
    """Checkpointing recomputes activations: the LoRA gradient must be identical and non-zero (with frozen
    embeddings, reentrant checkpointing would otherwise give checkpointed adapters no gradient)."""
    grads = []
    for gc in (False, True):
        cap = _GradCapture()
        train(tiny_model_dir, _examples(tok), tmp_path / f"gc{gc}", max_steps=1, batch_size=2, max_grad_norm=0.0,
              gradient_checkpointing=gc, callbacks=[cap], **FAST)  # fmt: skip
        grads.append(cap.grads)
    assert any(g.abs().sum() > 0 for g in grads[1].values())
    terms = step_terms(tiny_model_dir, (len(e.input_ids) for e in _examples(tok)))
    for name, g in grads[0].items():
        assert_fp32_close(grads[1][name], g, terms, msg=name)


def test_bf16_autocast_trains(tiny_model_dir, tok, tmp_path):
    r = train(
        tiny_model_dir,
        _examples(tok),
        tmp_path / "run",
        max_steps=15,
        batch_size=2,
        lr=1e-2,
        **{**FAST, "precision": "bf16"},
    )
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in r.losses)
    assert r.last_loss < 0.5 * r.first_loss, r.losses


DDP_WORKER = textwrap.dedent(
    """
    import sys, torch
    from transformers import TrainerCallback
    from edge_distill.models import load_tokenizer
    from edge_distill.training import Example, train

    model_dir, out_dir, bs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tok = load_tokenizer(model_dir)
    examples = []
    for q, a in PAIRS:
        p = tok(q, add_special_tokens=False)["input_ids"]
        r = tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        examples.append(Example(p + r, [0.0] * len(p) + [1.0 / len(r)] * len(r)))

    class Capture(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
            if state.is_world_process_zero:
                grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
                torch.save({"world": args.world_size, "grads": grads}, out_dir + "/grads.pt")

    train(model_dir, examples, out_dir, max_steps=1, batch_size=bs, max_grad_norm=0.0, lora={"dropout": 0.0},
          group_by_length=False, precision="fp32", callbacks=[Capture()])  # fp32: see FAST
    """
)


DDP_PAIRS = [("What is 2+3?", " 5"), ("Tom has 12 apples and eats 4. How many are left?", " 8 apples")]


@pytest.mark.slow
def test_ddp_two_ranks_give_the_single_process_gradient(tiny_model_dir, tok, tmp_path):
    """torchrun with 2 CPU ranks x batch 1 == 1 process x batch 2: the step's example count is summed
    over ranks and DDP's gradient averaging is undone, so data parallelism does not rescale the loss."""
    script = tmp_path / "worker.py"
    script.write_text(f"PAIRS = {DDP_PAIRS!r}\n{DDP_WORKER}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {"single": [sys.executable, str(script)], "ddp": [sys.executable, "-m", "torch.distributed.run",
            "--nproc_per_node", "2", "--master_port", "29533", str(script)]}  # fmt: skip
    grads = {}
    for name, cmd in runs.items():
        out = tmp_path / name
        out.mkdir()
        bs = "2" if name == "single" else "1"
        proc = subprocess.run(
            [*cmd, str(tiny_model_dir), str(out), bs], env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        grads[name] = torch.load(out / "grads.pt")
    assert grads["single"]["world"] == 1 and grads["ddp"]["world"] == 2
    terms = step_terms(tiny_model_dir, (len(e.input_ids) for e in _examples(tok, DDP_PAIRS)))
    for k, g in grads["single"]["grads"].items():
        assert_fp32_close(grads["ddp"]["grads"][k], g, terms, msg=k)


class _StopAfter(TrainerCallback):
    """Simulates a crash/preemption after `step` optimizer steps."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step >= self.step:
            raise KeyboardInterrupt(f"stopped at step {state.global_step}")


def test_resume_continues_from_last_checkpoint(tiny_model_dir, tok, tmp_path):
    out = tmp_path / "run"
    pairs = [
        ("What is 2+3?", " 5"),
        ("What is 4+4?", " 8"),
        ("Half of 9?", " 4.5"),
        ("Ten times ten?", " 100"),
    ]
    kwargs = {**FAST, "save_steps": 4, "max_steps": 10, "batch_size": 2, "lr": 1e-2, "group_by_length": True}
    with pytest.raises(KeyboardInterrupt):
        train(tiny_model_dir, _examples(tok, pairs), out, callbacks=[_StopAfter(6)], **kwargs)
    assert (out / "checkpoints" / "checkpoint-4").is_dir() and not (out / "final").exists()
    r = train(tiny_model_dir, _examples(tok, pairs), out, **kwargs)
    assert r.resumed_from_step == 4 and r.steps == 10
    assert [s for s, _ in r.losses] == list(range(5, 11)), r.losses  # steps 1-4 were not run again
    logged = [json.loads(line) for line in (out / "train_metrics.jsonl").read_text().splitlines()]
    # the interrupted run logged step 5; the resume re-ran it from checkpoint-4, and it is in the file once
    assert [row["step"] for row in logged if "loss" in row] == list(range(1, 11))
    # resume=False starts over; an uninterrupted run follows the same trajectory (same data order,
    # optimizer and scheduler state restored), so resuming is exact, not just "continues"
    r2 = train(tiny_model_dir, _examples(tok, pairs), out, resume=False, **kwargs)
    assert r2.resumed_from_step == 0 and r2.losses[0][0] == 1
    logged = [json.loads(line) for line in (out / "train_metrics.jsonl").read_text().splitlines()]
    # a fresh start replaces the old rows of this training: one trajectory in the file, not two
    assert [row["step"] for row in logged if "loss" in row] == list(range(1, 11))
    assert all({"epoch", "lr", "loss", "time"} <= set(row) for row in logged if "loss" in row)
    uninterrupted = dict(r2.losses)
    for step, loss in r.losses:
        assert loss == pytest.approx(uninterrupted[step], rel=1e-4), (step, r.losses, r2.losses)


def test_merge_lora_gives_same_logits_as_base_plus_adapter(tiny_model_dir, tok, tmp_path):
    from edge_distill.models import load_model

    r = train(tiny_model_dir, _examples(tok), tmp_path / "run", max_steps=5, batch_size=2, lr=1e-2, **FAST)
    merged = merge_lora(r.final_dir, tmp_path / "merged")
    assert (merged / "config.json").is_file() and (merged / "tokenizer.json").is_file()
    assert not (merged / "adapter_config.json").exists()
    # the trained and the merged directory prompt like the student, not like the base model's chat template
    from edge_distill.models import load_tokenizer
    from edge_distill.strategies import student_prompt

    chat = [{"role": "user", "content": "What is 2 + 3?"}]
    for d in (r.final_dir, merged):
        rendered = load_tokenizer(d).apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        assert rendered == student_prompt("What is 2 + 3?")
    ids = torch.tensor([_examples(tok)[1].input_ids])
    with torch.no_grad():
        unmerged = load_model(tiny_model_dir, adapter_dir=r.final_dir, merge=False)
        assert type(unmerged).__name__ == "PeftModelForCausalLM"  # adapter applied at run time, not folded
        a = unmerged(ids).logits
        b = load_model(merged)(ids).logits
        folded = load_model(r.final_dir)(ids).logits  # an adapter dir loads its base and folds the adapter in
        base = load_model(tiny_model_dir)(ids).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(folded, b, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(a, base, atol=1e-3)  # the adapter is not a no-op, so the check means something


def test_train_rejects_adapter_dir_and_empty_data(tiny_model_dir, tok, tmp_path):
    r = train(tiny_model_dir, _examples(tok), tmp_path / "run", max_steps=1, batch_size=2, **FAST)
    with pytest.raises(ModelError, match="merge it first"):
        train(r.final_dir, _examples(tok), tmp_path / "again", max_steps=1, **FAST)
    with pytest.raises(ValueError, match="no examples"):
        train(tiny_model_dir, [], tmp_path / "empty", max_steps=1, **FAST)


def test_an_objectives_compute_loss_hook_replaces_weighted_ce(tiny_model_dir, tok, tmp_path):
    """`loss_fn` (an Objective's compute_loss) is what the trainer optimizes: the same loss as weighted CE
    gives the same logged losses; half of it gives half (the hook really is the loss, not a side call)."""
    from edge_distill.objectives.losses import weighted_ce

    calls = []

    def half_ce(model, batch, nll_cap):
        calls.append(nll_cap)
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        return 0.5 * weighted_ce(out.logits, batch["input_ids"], batch["weights"], nll_cap), out

    kw = dict(max_steps=2, batch_size=2, lr=1e-9, **FAST)  # ~no update: both runs see the same weights
    ref = train(tiny_model_dir, _examples(tok), tmp_path / "ref", **kw)
    hooked = train(tiny_model_dir, _examples(tok), tmp_path / "hook", loss_fn=half_ce, nll_cap=3.0, **kw)
    assert calls and set(calls) == {3.0}
    for (_, a), (_, b) in zip(ref.losses, hooked.losses, strict=True):
        assert b == pytest.approx(0.5 * a, rel=1e-4)


def test_lora_top_layers_adapts_only_the_top_layers_and_stops_the_backward_there(
    tiny_model_dir, tok, tmp_path
):
    """train.lora.top_layers (opt-in): adapters on the top N decoder layers only; the layers below carry no
    graph (their outputs need no gradient), the run learns, and the adapter merges."""
    from edge_distill.config import LoraConfig, TrainConfig
    from edge_distill.training import _student_model

    model, n_trainable = _student_model(
        tiny_model_dir, TrainConfig(lora=LoraConfig(top_layers=1, dropout=0.0))
    )
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    assert names and all(".layers.1." in k for k in names), names
    everywhere, _ = _student_model(tiny_model_dir, TrainConfig(lora=LoraConfig(dropout=0.0)))
    assert n_trainable * 2 == sum(p.numel() for p in everywhere.parameters() if p.requires_grad)
    needs_grad = {}
    layers = model.get_base_model().model.layers
    hooks = [layer.register_forward_hook(lambda m, a, out, i=i: needs_grad.__setitem__(i, out[0].requires_grad))
             for i, layer in enumerate(layers)]  # fmt: skip
    model.train()
    model(input_ids=torch.tensor([_examples(tok)[0].input_ids]))
    for h in hooks:
        h.remove()
    assert needs_grad == {0: False, 1: True}

    r = train(tiny_model_dir, _examples(tok), tmp_path / "run", max_steps=30, batch_size=2, lr=1e-2,
              **{**FAST, "lora": {"dropout": 0.0, "top_layers": 1}})  # fmt: skip
    assert r.last_loss < 0.3 * r.first_loss, r.losses
    merged = merge_lora(r.final_dir, tmp_path / "merged")
    ids = torch.tensor([_examples(tok)[0].input_ids])
    from edge_distill.models import load_model

    assert torch.allclose(load_model(merged)(ids).logits, load_model(r.final_dir)(ids).logits, atol=1e-4)


@pytest.mark.parametrize(
    ("lora", "match"),
    [
        ({"top_layers": 3}, "student has 2 decoder layers"),
        ({"top_layers": 1, "target_modules": ["nope"]}, "no layer"),
    ],
)
def test_lora_top_layers_rejects_what_the_student_does_not_have(tiny_model_dir, tok, tmp_path, lora, match):
    from edge_distill.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"train\.lora\.top_layers.*{match}"):
        train(tiny_model_dir, _examples(tok), tmp_path / "run", max_steps=1, **{**FAST, "lora": lora})
