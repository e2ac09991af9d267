"""Compose the data methods (`methods: [fdd, siked]`) in one run directory, each resumable.

Methods run in the configured order; each hands the next its best model (which becomes the next method's
iteration/round 0 without retraining) and its data (FDD's verified problems and rationales join the
teacher data SIKeD mixes). The loops see train and dev problems only: the test split is never read here
(contamination checks get question *texts* of the eval sets, no answers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edge_distill import stages
from edge_distill.config import METHOD_NAMES, Config, FddConfig, SikedConfig, check_table_names
from edge_distill.io import write_json, write_text
from edge_distill.methods import MethodInputs, MethodResult, SamplerFactory, Stages
from edge_distill.methods.fdd import feedback_sampling, require_live_teacher, run_fdd
from edge_distill.methods.plots import records_markdown, write_plots
from edge_distill.methods.sampling import SamplingParams, make_sampler
from edge_distill.methods.siked import run_siked
from edge_distill.rundir import RunDir, to_stored
from edge_distill.types import Judging

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MethodOptions:
    """Each method's own settings: its config section, and FDD's teacher, feedback sampling and the eval
    question texts of its contamination check."""

    siked: SikedConfig = field(default_factory=SikedConfig)
    fdd: FddConfig = field(default_factory=FddConfig)
    feedback: SamplingParams | None = None
    teacher: Any = None
    eval_questions: Sequence[str] = ()


def _siked(run_dir: Path, inputs: MethodInputs, o: MethodOptions) -> MethodResult:
    return run_siked(run_dir, inputs, o.siked)


def _fdd(run_dir: Path, inputs: MethodInputs, o: MethodOptions) -> MethodResult:
    return run_fdd(
        run_dir, inputs, o.fdd, teacher=o.teacher, feedback=o.feedback, eval_questions=o.eval_questions
    )


# the one table of `methods:` names (config.METHOD_NAMES lists them for the config's validation)
METHODS: dict[str, Callable[[Path, MethodInputs, MethodOptions], MethodResult]] = {
    "siked": _siked,
    "fdd": _fdd,
}
check_table_names(METHODS, METHOD_NAMES, "methods/loop.py: METHODS", "METHOD_NAMES")


def run_methods(
    methods: Sequence[str], run_dir: Path, inputs: MethodInputs, options: MethodOptions | None = None
) -> dict[str, Any]:
    """Run (or resume) each method under `run_dir/{iter_k,round_k}/`; return the stage summary
    (`model` = the best model of the last method, chosen on dev) and write `run_dir/methods/`
    (summary.json, methods.md, PNG plots). `inputs.start_model`: a student already trained on the teacher
    samples (`train.reuse_sft`), the first method's step 0 without retraining."""
    run_dir = Path(run_dir)
    options = options or MethodOptions()
    if "fdd" in methods:
        require_live_teacher(options.teacher)  # fail before any training, not after round 0
    results: dict[str, MethodResult] = {}
    for method in methods:
        run = METHODS.get(method)
        if run is None:
            raise ValueError(f"methods: {method!r} is not a method; choose one of {', '.join(METHODS)}")
        result = run(run_dir, inputs, options)
        results[method] = result
        # the next method starts from this one's best model and its data
        inputs = replace(
            inputs,
            train_problems=result.problems,
            teacher_samples=result.teacher_samples,
            start_model=result.model,
            start_summary=result.records[result.best]["dev"]["summary"],
        )
    return _write_summary(run_dir, methods, results)


def _write_summary(run_dir: Path, methods: Sequence[str], results: dict[str, MethodResult]) -> dict[str, Any]:
    out = run_dir / "methods"
    sections, summary = [], {}
    for method in methods:
        r = results[method]
        plots = write_plots(method, r.records, out)
        sections.append(records_markdown(method, r.records, r.best, plots, run_dir))
        summary[method] = {
            "best": r.best,
            "steps": len(r.records),
            "unit": r.unit,
            "step_dirs": [to_stored(d, run_dir) for d in r.step_dirs],  # what the report reads
            "records": r.records,
        }
    last = results[methods[-1]]
    write_json(out / "summary.json", summary)
    write_text(out / "methods.md", "\n".join(sections))
    best = last.records[last.best]
    return {
        "model": str(last.model),
        "best": f"{methods[-1]}:{last.best}",
        "best_dir": str(last.best_dir),
        "best_eval": str(last.best_dir / "eval"),
        "dev_accuracy": best["dev"]["accuracy"],
        "alpha": best.get("alpha"),
        "report": str(out / "methods.md"),
        "records": {m: [_brief(r) for r in results[m].records] for m in methods},
    }


def _brief(r: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "dev",
        "alpha",
        "train_size",
        "easy",
        "hard",
        "requested",
        "verified",
        "dropped",
        "student_strategy_mix",
    )
    out = {k: r[k] for k in keys if k in r}
    out["dev"] = {k: v for k, v in r["dev"].items() if k != "summary"}
    return out


# ------------------------------------------------------------------ the pipeline's entry point
def sampler_factory_for(
    backend: str, batch_size: int, generate_fn: Any = None, **backend_kwargs: Any
) -> SamplerFactory:
    """`backend_kwargs`: dtype (transformers), n_threads/parallel (llamacpp); None values are dropped."""

    def factory(model_dir: Path):
        keys = {"transformers": ("dtype",), "llamacpp": ("n_threads", "parallel")}.get(backend, ())
        kwargs = {k: backend_kwargs[k] for k in keys if backend_kwargs.get(k) is not None}
        if backend == "transformers":
            kwargs.update(batch_size=batch_size, generate_fn=generate_fn)
        return make_sampler(backend, model_dir, **kwargs)  # type: ignore[arg-type]

    return factory


def _student_decoder(cfg: Config) -> Any:
    """A student samples with the same decoding it is evaluated with (CasCoD: two stages)."""
    from edge_distill.objectives.build import student_decoder

    return student_decoder(cfg.train)


def eval_question_texts(cfg: Config) -> list[str]:
    """Question texts of the test split for FDD's contamination check (answers are dropped here)."""
    from edge_distill.errors import EdgeDistillError

    try:
        return [p.question for p in stages.load_test(cfg.data)]
    except (EdgeDistillError, OSError) as e:
        log.warning("FDD contamination check against dev questions only: test split unreadable (%s)", e)
        return []


def run_methods_from_config(cfg: Config, run: RunDir) -> dict[str, Any]:
    """`stage_methods` of the pipeline: maps the config tree to `run_methods` arguments."""
    from edge_distill.fastpath import inference_dtype
    from edge_distill.models import resolve_model

    run.require("filter/train.jsonl")
    # module attributes, looked up per call, so a test can wrap a stage helper
    judging = Judging.of(cfg)  # one tolerance and sandbox mode for training data, sampling and eval
    topk = run.path / stages.TOPK_STORE if stages.records_topk(cfg.train.kd) else None
    steps = Stages(
        train=lambda samples, base, out: stages.train_student(
            cfg.train, samples, base, out, seed=cfg.seed, judging=judging, topk=topk
        ),
        evaluate=lambda model, problems, out: stages.evaluate_student(
            cfg.eval, cfg.train, model, problems, out, "dev", judging
        ),
        judging=judging,
    )
    teacher = stages.build_teacher(cfg.teacher) if "fdd" in cfg.methods else None
    start = stages.reused_sft(cfg.train, cfg.student.model, run)  # SIKeD's iteration 0 (Config checks)
    inputs = MethodInputs(
        train_problems=stages.load_split(run, "train"),
        dev_problems=stages.load_split(run, "dev"),
        teacher_samples=stages.load_samples(run.path / "filter" / "train.jsonl"),
        base_model=resolve_model(cfg.student.model),
        stages=steps,
        sampler_factory=sampler_factory_for(
            cfg.siked.sampler,
            cfg.siked.sampler_batch_size,
            _student_decoder(cfg),
            dtype=inference_dtype(cfg.train.precision),
            n_threads=cfg.siked.sampler_threads,
            parallel=cfg.siked.sampler_parallel,
        ),
        seed=cfg.seed,
        start_model=start,
    )
    options = MethodOptions(
        siked=cfg.siked,
        fdd=cfg.fdd,
        feedback=feedback_sampling(cfg.fdd, cfg.siked, cfg.eval.max_new_tokens, cfg.seed),
        teacher=teacher,
        eval_questions=eval_question_texts(cfg) if "fdd" in cfg.methods else (),
    )
    return run_methods(cfg.methods, run.path, inputs, options)
