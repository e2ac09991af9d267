"""FSDP through torchrun with 2 CPU (gloo) ranks: the same training result as one process, a preempted
FSDP run resumes from its checkpoint to the same result, and the FSDP-saved LoRA adapter merges.

The accelerate FSDP plugin is switched on by the environment `accelerate launch --use_fsdp` sets
(ACCELERATE_USE_FSDP, FSDP_*), so this is the path docs/scaling.md's multi-GPU commands take, on gloo instead of
NCCL — except that accelerate only enables FSDP on accelerators, so the worker flips its state from
MULTI_CPU to FSDP (the only test-side shim). SGD (momentum 0.5, constant lr) makes every update a fixed linear function of the gradients, so equal
adapters mean equal gradients (Adam's first step would hide a gradient scale error); momentum also gives
the optimizer a state to checkpoint (torch cannot reload an empty FSDP optimizer state).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.fp32_tolerance import assert_fp32_close, step_terms

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import accelerate.state as st
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    # accelerate keeps FSDP for accelerators: on MULTI_CPU it silently falls back to DDP. Switch the
    # (process-wide, shared) state to FSDP after it is built, exactly as it is set on a GPU launch.
    _init = st.AcceleratorState.__init__
    def _init_fsdp(self, *a, **kw):
        _init(self, *a, **kw)
        if os.environ.get("ACCELERATE_USE_FSDP") == "true" and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = FullyShardedDataParallelPlugin()
    st.AcceleratorState.__init__ = _init_fsdp
    from transformers import TrainerCallback
    from edge_distill.models import load_tokenizer
    from edge_distill.training import Example, train

    model_dir, out_dir, bs, steps, stop = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    tok = load_tokenizer(model_dir)
    examples = []
    for q, a in PAIRS:
        p = tok(q, add_special_tokens=False)["input_ids"]
        r = tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        examples.append(Example(p + r, [0.0] * len(p) + [1.0 / len(r)] * len(r)))

    class Probe(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            if state.is_world_process_zero:
                json.dump({"type": str(AcceleratorState().distributed_type), "world": args.world_size},
                          open(out_dir + "/dist.json", "w"))
        def on_step_end(self, args, state, control, **kw):
            if stop and state.global_step >= stop:
                raise KeyboardInterrupt("preempted")

    try:
        train(model_dir, examples, out_dir, max_steps=steps, batch_size=bs, max_grad_norm=0.0, lora={"dropout": 0.0},
              lr=0.5, group_by_length=False, warmup_steps=0, scheduler="constant", save_steps=1, logging_steps=1,
              packing=True, precision="fp32", training_args={"optim": "sgd", "optim_args": "momentum=0.5"}, callbacks=[Probe()])
    except KeyboardInterrupt:
        sys.exit(3)
    """
)

PAIRS = [("What is 2+3?", " 5"), ("Tom has 12 apples and eats 4. How many are left?", " 8 apples"),
         ("Half of 9?", " 4.5"), ("Ten times ten?", " The answer is 100")]  # fmt: skip
STEPS = 2

# FSDP2 (fully_shard): FSDP1 refuses a CPU compute device ("cpu vs cpu:0"); FSDP2 shards on gloo
FSDP_ENV = {
    "ACCELERATE_USE_FSDP": "true",
    "FSDP_VERSION": "2",
    "FSDP_RESHARD_AFTER_FORWARD": "true",
    "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
    "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT",
    "FSDP_CPU_RAM_EFFICIENT_LOADING": "false",
}


def _adapter(path):
    from safetensors.torch import load_file

    return load_file(str(path / "final" / "adapter_model.safetensors"))


@pytest.mark.slow
def test_fsdp_two_ranks_match_one_process_and_resume_and_merge(tiny_model_dir, tmp_path):
    import json

    script = tmp_path / "worker.py"
    script.write_text(f"PAIRS = {PAIRS!r}\n{WORKER}")
    base_env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(name, fsdp, bs, stop=0, port=29561):
        out = tmp_path / name
        out.mkdir(exist_ok=True)
        cmd = [sys.executable, str(script)]
        if fsdp:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port), str(script)]  # fmt: skip
        env = {**base_env, **(FSDP_ENV if fsdp else {})}
        proc = subprocess.run([*cmd, str(tiny_model_dir), str(out), str(bs), str(STEPS), str(stop)], env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        return proc, out

    proc, single = run("single", False, 4)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc, fsdp = run("fsdp", True, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((fsdp / "dist.json").read_text()) == {"type": "DistributedType.FSDP", "world": 2}
    ref, got = _adapter(single), _adapter(fsdp)
    assert ref.keys() == got.keys() and any(v.abs().sum() > 0 for k, v in ref.items() if "lora_B" in k)
    # SGD: the adapters are linear in the STEPS steps' gradients, each a float32 sum over the examples' tokens
    from edge_distill.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    terms = STEPS * step_terms(tiny_model_dir, (len(tok(q + a)["input_ids"]) + 1 for q, a in PAIRS))
    for k in ref:
        assert_fp32_close(got[k], ref[k], terms, msg=k)

    # preempted in step 2 (after checkpoint-1 was saved), then resumed: the uninterrupted run's adapter
    proc, resumed = run("resumed", True, 2, stop=2, port=29562)
    assert proc.returncode != 0 and (resumed / "checkpoints" / "checkpoint-1").is_dir()
    assert not (resumed / "final").exists()
    proc, resumed = run("resumed", True, 2, port=29563)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((resumed / "train_result.json").read_text())["resumed_from_step"] == 1
    for k, v in _adapter(resumed).items():
        assert_fp32_close(v, ref[k], terms, msg=k)

    # the FSDP-saved adapter merges into its base like any other
    from edge_distill.models import load_model
    from edge_distill.training import merge_lora

    merged = merge_lora(resumed / "final", tmp_path / "merged")
    ids = torch.tensor([[1, 5, 9, 30, 41]])
    with torch.no_grad():
        a = load_model(tiny_model_dir, adapter_dir=resumed / "final", merge=False)(ids).logits
        b = load_model(merged)(ids).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
