"""Trainer speed knobs change time and memory, never the result: one optimizer step's gradient is the same
with packing, with the chunked loss head, and with full logits; bf16 is honoured on CPU."""

from __future__ import annotations

import pytest
import torch
from test_training import FAST, _GradCapture  # tests/ is on sys.path (pytest rootdir import mode)
from transformers import TrainerCallback

from edge_distill.objectives.examples import Example
from edge_distill.training import train
from tests.fp32_tolerance import assert_fp32_close, step_terms


@pytest.fixture(scope="module")
def examples(tiny_model_dir):
    from edge_distill.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    out = []
    pairs = [("What is 2+3?", " 5", 1.0), ("Tom has 12 apples and eats 4. How many are left?", " 8 apples", 1.0),
             ("What is 10 times 10?", " The answer is 100", -0.05)]  # fmt: skip
    for q, a, sign in pairs:
        p = tok(q, add_special_tokens=False)["input_ids"]
        r = tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        out.append(Example(p + r, [0.0] * len(p) + [sign / len(r)] * len(r)))
    return out


def _step_grads(model_dir, examples, out, **kw):
    cap = _GradCapture()
    train(model_dir, examples, out, max_steps=1, batch_size=3, max_grad_norm=0.0, nll_cap=4.0, callbacks=[cap],
          **FAST, **kw)  # fmt: skip
    assert cap.grads and any(g.abs().sum() > 0 for g in cap.grads.values())
    return cap.grads


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_packing_and_chunked_loss_give_the_full_logit_gradient(tiny_model_dir, examples, tmp_path, finetune):
    ref = _step_grads(tiny_model_dir, examples, tmp_path / "ref", finetune=finetune, loss_chunk_size=0)
    for name, kw in {"chunked": {"loss_chunk_size": 3}, "packed": {"packing": True},
                     "packed_eager": {"packing": True, "attn_implementation": "eager", "loss_chunk_size": 0}}.items():  # fmt: skip
        got = _step_grads(tiny_model_dir, examples, tmp_path / name, finetune=finetune, **kw)
        terms = step_terms(tiny_model_dir, (len(e.input_ids) for e in examples))
        for k, g in ref.items():
            assert_fp32_close(got[k], g, terms, msg=f"{name}: {k}")


def test_explicit_bf16_is_autocast_on_cpu_and_auto_follows_the_cpu(tiny_model_dir, examples, tmp_path):
    from edge_distill.fastpath import cpu_has_native_bf16, inference_dtype, mixed_precision_flags

    assert mixed_precision_flags("bf16") == (True, False)
    assert mixed_precision_flags("fp32") == (False, False)
    if not torch.cuda.is_available():
        assert mixed_precision_flags("auto") == (cpu_has_native_bf16(), False)
        assert inference_dtype("bf16") == torch.bfloat16 and inference_dtype("fp32") == torch.float32
    seen = []

    class Dtype(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            seen.append(args.bf16)

    r = train(tiny_model_dir, examples, tmp_path / "bf16", max_steps=2, batch_size=3, packing=True,
              callbacks=[Dtype()], **{**FAST, "precision": "bf16"})  # fmt: skip
    assert seen == [True, True] and all(torch.isfinite(torch.tensor(x)) for _, x in r.losses)


def test_bad_attn_implementation_and_liger_without_gpu_are_config_errors(tiny_model_dir, examples, tmp_path):
    from edge_distill.errors import ConfigError

    with pytest.raises(ConfigError, match="attn_implementation"):
        train(tiny_model_dir, examples, tmp_path / "a", max_steps=1, attn_implementation="fast", **FAST)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="liger"):
            train(tiny_model_dir, examples, tmp_path / "b", max_steps=1, liger=True, **FAST)


def test_loss_head_is_active_on_llama_and_peft_and_never_returns_full_logits(tiny_model_dir, examples):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from edge_distill.fastpath import ChunkedLossHead
    from edge_distill.packing import PackedCollator

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(task_type="CAUSAL_LM")
    )
    head = ChunkedLossHead(model, 4)
    assert head.active and not ChunkedLossHead(model, 0).active
    b = PackedCollator()(examples)
    with head.capture(b["input_ids"], b["weights"], None) as box:
        out = model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False)
    assert out.logits.shape == (1, 1, 1) and box[0].shape == ()
    plain = model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits
    assert plain.shape[-1] == model.config.vocab_size  # the patch is gone after the block
