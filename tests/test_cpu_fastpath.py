"""train.cpu_fastpath: per-example attention in packed rows and the fused LoRA linear give the numbers the
plain paths give (fp32 bound of tests/fp32_tolerance.py), draw the same dropout units with
`lora.dropout_draws: torch` and the same dropout law with `fast`, fall back where they do not apply, and leave
nothing of themselves in a saved model."""

from __future__ import annotations

import copy

import pytest
import torch
from test_training import FAST, _GradCapture  # tests/ is on sys.path (pytest rootdir import mode)

from edge_distill.cpu_fastpath import (
    PACKED_SDPA,
    _packed_spans,
    fast_dropout_keep,
    fuse_lora_linears,
    register_packed_sdpa,
)
from edge_distill.objectives.examples import Example
from edge_distill.packing import PackedCollator
from edge_distill.training import train
from tests.fp32_tolerance import assert_fp32_close, step_terms


@pytest.fixture(scope="module")
def examples(tiny_model_dir):
    from edge_distill.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    out = []
    for q, a in [("What is 2+3?", " 5"), ("Tom has 12 apples and eats 4. How many are left?", " 8 apples"),
                 ("What is 10 times 10?", " The answer is 100")]:  # fmt: skip
        p = tok(q, add_special_tokens=False)["input_ids"]
        r = tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        out.append(Example(p + r, [0.0] * len(p) + [1.0 / len(r)] * len(r)))
    return out


def _load(model_dir, attn):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=attn)


def test_packed_spans():
    assert _packed_spans(torch.tensor([[0, 1, 2, 0, 1, 0]]), 6) == [(0, 3), (3, 5), (5, 6)]
    assert _packed_spans(torch.tensor([[0, 1, 2, 3]]), 4) is None  # one example: plain causal SDPA
    assert _packed_spans(torch.tensor([[5, 6, 0, 1]]), 4) is None  # does not start an example at 0
    assert _packed_spans(torch.tensor([[0, 1, 0, 1], [0, 1, 2, 3]]), 4) is None  # a padded batch
    assert _packed_spans(None, 4) is None


def test_packed_attention_gives_each_example_its_own_logits_and_input_gradient(tiny_model_dir, examples):
    batch = PackedCollator()(examples)
    ids, pos = batch["input_ids"], batch["position_ids"]
    got = {}
    for attn in ("sdpa", register_packed_sdpa()):
        model = _load(tiny_model_dir, attn)
        emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=emb, position_ids=pos, use_cache=False).logits
        logits.square().mean().backward()
        got[attn] = (logits.detach(), emb.grad)
    terms = step_terms(tiny_model_dir, [ids.shape[1]])
    assert_fp32_close(got[PACKED_SDPA][0], got["sdpa"][0], terms, msg="logits")
    assert_fp32_close(got[PACKED_SDPA][1], got["sdpa"][1], terms, msg="input gradient")
    # and each example alone: what packing promises
    model = _load(tiny_model_dir, PACKED_SDPA)
    start = 0
    for e in examples:
        alone = model(input_ids=torch.tensor([e.input_ids]), use_cache=False).logits
        part = got[PACKED_SDPA][0][:, start : start + len(e.input_ids)]
        assert_fp32_close(part, alone.detach(), terms, msg="example alone")
        start += len(e.input_ids)


def test_packed_attention_falls_back_to_sdpa_for_padded_batches_and_generation(tiny_model_dir):
    ids = torch.tensor([[5, 6, 7, 8], [0, 0, 9, 10]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    ref, fast = _load(tiny_model_dir, "sdpa"), _load(tiny_model_dir, register_packed_sdpa())
    a = ref(input_ids=ids, attention_mask=mask, use_cache=False).logits
    b = fast(input_ids=ids, attention_mask=mask, use_cache=False).logits
    assert torch.equal(a, b)
    g1 = ref.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    g2 = fast.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    assert torch.equal(g1, g2)


def _lora_pair(model_dir, dropout, draws="torch"):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    plain = get_peft_model(_load(model_dir, "sdpa"), LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout,
                                                                target_modules="all-linear", task_type="CAUSAL_LM"))  # fmt: skip
    with torch.no_grad():  # B = 0 at init: make the adapters matter
        for n, p in plain.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.05)
    fused = copy.deepcopy(plain)
    assert fuse_lora_linears(fused, draws) == 2 * 7  # 2 layers x q, k, v, o, gate, up, down
    return plain, fused


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_fused_lora_draws_the_same_dropout_and_gives_the_same_gradients(tiny_model_dir, dropout):
    plain, fused = _lora_pair(tiny_model_dir, dropout)
    ids = torch.tensor([[3, 17, 42, 99, 7, 250, 31, 8]])
    out = {}
    for name, model in (("plain", plain), ("fused", fused)):
        model.train()
        torch.manual_seed(123)  # the dropout draws
        logits = model(input_ids=ids, use_cache=False).logits
        logits.square().mean().backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        out[name] = (logits.detach(), grads, torch.rand(1).item())  # where the random stream ended
    terms = step_terms(tiny_model_dir, [ids.shape[1]])
    assert_fp32_close(out["fused"][0], out["plain"][0], terms, msg="logits")
    for n, g in out["plain"][1].items():
        assert_fp32_close(out["fused"][1][n], g, terms, msg=n)
    assert out["fused"][2] == out["plain"][2]  # the same number of draws from the same generator
    if dropout:  # and the draws matter: another seed gives other logits
        torch.manual_seed(7)
        assert not torch.allclose(fused(input_ids=ids, use_cache=False).logits, out["fused"][0])


def test_fused_lora_falls_back_where_it_does_not_apply(tiny_model_dir):
    plain, fused = _lora_pair(tiny_model_dir, 0.0)
    ids = torch.tensor([[3, 17, 42, 99]])
    plain.eval(), fused.eval()
    with plain.disable_adapter(), fused.disable_adapter():  # adapters off: the base model
        assert torch.equal(plain(input_ids=ids).logits, fused(input_ids=ids).logits)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 input under autocast: PEFT's own path
        a, b = plain(input_ids=ids).logits, fused(input_ids=ids).logits
    assert torch.equal(a, b)


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_a_training_step_is_the_same_with_and_without_the_fastpath(
    tiny_model_dir, examples, tmp_path, finetune
):
    grads, losses = {}, {}
    for on in (False, True):
        cap = _GradCapture()
        r = train(tiny_model_dir, examples, tmp_path / str(on), max_steps=2, batch_size=3, packing=True,
                  finetune=finetune, cpu_fastpath=on, callbacks=[cap],
                  **{**FAST, "lora": {"dropout": 0.1, "dropout_draws": "torch"}})  # fmt: skip
        grads[on], losses[on] = cap.grads, [x for _, x in r.losses]
        saved = list(r.final_dir.glob("*.json"))
        assert saved and not any(PACKED_SDPA in f.read_text() for f in saved)  # loads without this module
    terms = step_terms(tiny_model_dir, (len(e.input_ids) for e in examples))
    for k, g in grads[False].items():
        assert_fp32_close(grads[True][k], g, terms, msg=k)
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)


@pytest.mark.parametrize("p", [0.05, 0.3])
def test_fast_dropout_draws_the_dropout_law_with_p_rounded_to_16_bits(p):
    x = torch.ones(1000, 1001)  # an odd size: the last 64-bit word is only partly used
    torch.manual_seed(5)
    keep, kept = fast_dropout_keep(x, p)
    assert keep.shape == x.shape and keep.dtype == x.dtype
    assert set(keep.unique().tolist()) <= {0.0, 1.0}
    assert kept == 1 - round(p * 65536) / 65536 and abs(kept - (1 - p)) <= 2**-17
    # the share kept, overall and in each of the four 16-bit fields of a word (a field that is not uniform,
    # e.g. a sign bit random_ never sets, moves its share far outside 6 standard errors)
    flat = keep.reshape(-1)
    for part in [flat, *(flat[i::4] for i in range(4))]:
        se = (kept * (1 - kept) / part.numel()) ** 0.5
        assert abs(part.mean().item() - kept) < 6 * se
    # seeded like every other draw, and a new mask on each call
    torch.manual_seed(5)
    assert torch.equal(fast_dropout_keep(x, p)[0], keep)
    assert not torch.equal(fast_dropout_keep(x, p)[0], keep)


def test_fast_dropout_leaves_probabilities_16_bits_cannot_hold_to_bernoulli():
    x = torch.ones(8, 8)
    assert fast_dropout_keep(x, 1e-6) is None and fast_dropout_keep(x, 1 - 1e-6) is None
    assert fast_dropout_keep(x, 2**-16) is not None


def test_fused_lora_with_fast_draws_applies_its_mask_and_rescales(tiny_model_dir):
    plain, fused = _lora_pair(tiny_model_dir, 0.3, draws="fast")
    layer = fused.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(2, 5, layer.in_features)
    layer.train()
    torch.manual_seed(11)
    got = layer(x)
    torch.manual_seed(11)
    keep, kept = fast_dropout_keep(x, 0.3)
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    want = layer.base_layer(x) + (x * keep) @ a.T @ b.T * (layer.scaling["default"] / kept)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    # unbiased: the mean output over n draws is the no-dropout output, within 6 standard errors per element
    layer.eval()
    with torch.no_grad():
        clean = layer(x)
        layer.train()
        outs = torch.stack([layer(x) for _ in range(300)])
    se = outs.std(0) / 300**0.5
    assert ((outs.mean(0) - clean).abs() <= 6 * se + 1e-6).all()


def test_a_training_run_with_fast_draws_starts_where_the_torch_draws_start(
    tiny_model_dir, examples, tmp_path
):
    """LoRA B is 0 at init, so the first loss cannot depend on the draws; later ones do (other numbers)."""
    losses = {}
    for draws in ("torch", "fast"):
        r = train(tiny_model_dir, examples, tmp_path / draws, max_steps=3, batch_size=1, packing=True,
                  finetune="lora", cpu_fastpath=True, **{**FAST, "lora": {"dropout": 0.3, "dropout_draws": draws}})  # fmt: skip
        losses[draws] = [x for _, x in r.losses]
    assert losses["fast"][0] == pytest.approx(losses["torch"][0], rel=1e-6)
    assert losses["fast"][1:] != losses["torch"][1:]
