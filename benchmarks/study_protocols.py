"""The accuracy study's protocols: what each one trains and tests, and how it was sized.

Each protocol is one base config (the keys every arm shares); `accuracy_study.py` adds the arm's own keys.
Kept apart from the runner so the sizing notes and numbers live next to the settings they justify.
"""

from __future__ import annotations

from typing import Any

# Sizing (CPU, measured on this project's 2-core box, SmolLM2-135M, LoRA r16): ~75 real tokens/s of training
# (docs/scaling.md), a GSM8K CoT example is ~215 tokens; greedy decoding of 30 problems x 192 tokens
# takes ~43 s. 30 steps x batch 4 (120 examples, ~26 k tokens) is ~5-6 min of training per arm; dev 40 +
# test 250 is ~7 min of decoding per arm. Test: the first 500 GSM8K test problems (`--gsm8k DIR`; the shipped
# sample is the first 250 of them). Power of the exact McNemar test (`stats.mcnemar_power`) to detect a 5-point
# gain over a CoT-SFT arm at 2.8 % (measured) when the arms solve problems independently: 0.64 at n=250,
# 0.87 at 400, 0.94 at 500; at a 5 % reference 0.50 / 0.73 / 0.83. Hence 500, ~6 min of decoding per arm more.
CPU: dict[str, Any] = {
    "data": {"train": "builtin:gsm8k-sample", "test": "builtin:gsm8k-sample", "limit_train": 160, "dev_size": 40},
    "teacher": {"backend": "recorded", "model": "builtin:gsm8k"},
    "student": {"model": "builtin:smollm2-135m"},
    "train": {"finetune": "lora", "lr": 5e-4, "epochs": 1, "max_steps": 30, "batch_size": 4, "max_length": 512,
              "warmup_steps": 2, "save_steps": 1000, "packing": True, "logging_steps": 4},
    "eval": {"split": "dev", "batch_size": 32, "max_new_tokens": 192, "baseline": False, "final_test": False},
    "siked": {"iterations": 2, "samples_per_question": 2, "limit_questions": 64, "max_new_tokens": 192,
              "sampler_batch_size": 32, "patience": 1},
    "fdd": {"rounds": 1, "limit_questions": 64},
}  # fmt: skip

# GPU (one H100/H200, <= 0.5B student): full GSM8K train (7,473 problems, 200 of them held out as dev) and the
# full test (1,319). Sized by estimate, NOT yet run on a GPU: SmolLM2-135M full fine-tune in bf16 with
# packing, 300 steps x 32 examples (~1.3 epochs of CoT, ~2 M tokens per arm); decoding 1,519 problems x 256
# tokens per arm with continuous batching; SIKeD samples 1,000 train questions x 4. Estimated budget (not
# measured): ~15 s of training and ~30-40 s of decoding per arm, ~90 s of SIKeD sampling, ~60 s of
# start-up, conversion and sandboxed PoT judging: ~6-7 min. At 1,319 test problems the exact McNemar test
# detects 5 points with power > 0.99 at 10 % discordance.
GPU: dict[str, Any] = {
    "data": {"dev_size": 200},
    "teacher": {"backend": "recorded", "model": "builtin:gsm8k"},
    "student": {"model": "builtin:smollm2-135m"},
    "train": {"finetune": "full", "lr": 5e-5, "epochs": 2, "max_steps": 300, "batch_size": 32, "max_length": 768,
              "warmup_steps": 20, "save_steps": 100000, "packing": True, "precision": "bf16", "logging_steps": 20},
    "eval": {"split": "dev", "batch_size": 256, "max_new_tokens": 256, "baseline": False, "final_test": False},
    "siked": {"iterations": 2, "samples_per_question": 4, "limit_questions": 1000, "max_new_tokens": 256,
              "sampler_batch_size": 256, "patience": 1},
    "fdd": {"rounds": 1, "limit_questions": 1000},
}  # fmt: skip

# the test suite's protocol: a tiny random student (--set student.model=DIR), a handful of problems
TINY: dict[str, Any] = {
    "data": {"train": "builtin:gsm8k-sample", "test": "builtin:gsm8k-sample", "limit_train": 8, "dev_size": 4},
    "teacher": {"backend": "recorded", "model": "builtin:gsm8k", "cache": None},
    "train": {"finetune": "lora", "lr": 3e-3, "max_steps": 2, "batch_size": 4, "max_length": 512, "save_steps": 1000},
    "eval": {"split": "dev", "batch_size": 8, "max_new_tokens": 8, "baseline": False, "final_test": False},
    "siked": {"iterations": 2, "samples_per_question": 1, "limit_questions": 4, "max_new_tokens": 8,
              "sampler_batch_size": 8},
}  # fmt: skip
# CPU protocol v2 (2 cores): the same arms on GSM8K's FIRST STEPS (benchmarks/gsm8k_first_step.py derives them
# from the socratic files given by --gsm8k: 3,488 train / 601 test problems), where a 135M student trained on
# two cores clears its untrained baseline by enough to rank methods. Sized from the learning curve on that set
# (`learning_curve.py --train <derived>/train.jsonl --arms cot:full,cot:lora --budgets 128,256
# --max-new-tokens 96`, 200 dev problems from train, Intel Xeon 2 cores, 2026-12-06): untrained 4/200,
# cot:full 22/200 after 128 examples and 27/200 after 256. Full fine-tune, 40 steps x 8 = 320 examples;
# test = all 601 derived test problems (power > 0.9 for 5 points at the measured ~13 % reference).
CPU_V2: dict[str, Any] = {
    "data": {"limit_train": 600, "dev_size": 100},
    "teacher": {"backend": "recorded", "model": "builtin:gsm8k"},
    "student": {"model": "builtin:smollm2-135m"},
    "train": {"finetune": "full", "lr": 1e-4, "epochs": 1, "max_steps": 40, "batch_size": 8, "max_length": 384,
              "warmup_steps": 5, "save_steps": 1000, "packing": True, "precision": "fp32", "logging_steps": 5},
    "eval": {"split": "dev", "batch_size": 32, "max_new_tokens": 96, "baseline": False, "final_test": False},
    # iterations counts iteration 0 (the sft-all model): 2 = one self-guided round. The committed 2026-12-06
    # results ran with 1, i.e. without any self-guided round (docs/study.md says so)
    "siked": {"iterations": 2, "samples_per_question": 2, "limit_questions": 64, "max_new_tokens": 96,
              "sampler_batch_size": 32, "patience": 1},
    "fdd": {"rounds": 1, "limit_questions": 64},
}  # fmt: skip
PROTOCOLS = {"cpu": CPU, "cpu-v2": CPU_V2, "gpu": GPU, "tiny": TINY}
# test problems per protocol: the first N of the test file, in file order (None = all of it)
TEST_LIMIT: dict[str, int | None] = {"cpu": 500, "cpu-v2": None, "gpu": None, "tiny": None}
# protocols whose data is derived from --gsm8k DIR (the derivation's module, beside this script)
DERIVED = {"cpu-v2": "gsm8k_first_step"}
