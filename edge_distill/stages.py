"""Stage helpers: one typed config section in, plain data out. The layer below the pipeline and the loops.

Data flows one way: `cli -> pipeline -> methods (SIKeD/FDD loops) -> stages -> components`. The pipeline
and `methods.loop` both call these helpers (the loops once per iteration/round); nothing here imports the
pipeline or the loops back. Each helper takes the config *section* it needs, whole (`cfg.data`,
`cfg.teacher`, `cfg.train`, `cfg.eval`), never the root tree; whatever judges answers also takes the run's
`Judging` (`answers.rel_tol`, `sandbox.mode`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_distill.io import read_jsonl, write_json, write_jsonl
from edge_distill.types import Judging, Problem, Sample

if TYPE_CHECKING:
    from edge_distill.config import DataConfig, EvalConfig, KdConfig, TeacherConfig, TrainConfig
    from edge_distill.rundir import RunDir


# ---------------------------------------------------------------------------------------------- data
def load_problems(data: DataConfig, split: str) -> Any:
    """The configured train (`split="train"`) or test problems, straight from their source
    (`data.LoadedProblems`: a sequence of Problem that also says what was skipped)."""
    from edge_distill.data import load_problems as load

    return load(data.train if split == "train" else data.test, **data.loader_kwargs(split))


def load_test(data: DataConfig) -> Any:
    """The test split is read here only: for the final number, never for selection."""
    return load_problems(data, "test")


def load_split(run: RunDir, split: str) -> list[Problem]:
    """A split the data stage wrote into the run directory (`data/{train,dev}.jsonl`)."""
    run.require(f"data/{split}.jsonl")
    return [Problem.from_dict(r) for r in read_jsonl(run.path / "data" / f"{split}.jsonl")]


def load_samples(path: Path) -> list[Sample]:
    return [Sample.from_dict(r) for r in read_jsonl(path)]


# ---------------------------------------------------------------------------------------------- teacher
def build_teacher(teacher: TeacherConfig, *, logprobs: int = 0, pieces: Any = None) -> Any:
    from edge_distill.teachers.factory import make_teacher

    return make_teacher(teacher, logprobs=logprobs, pieces=pieces)


TOPK_STORE = "teach/topk.npz"  # the teacher's top-k log-probs, beside teach/samples.jsonl (train.kd offline)


def records_topk(kd: KdConfig) -> bool:
    """Whether the teach stage records the teacher's top-k log-probs (`train.kd` on, source offline)."""
    return kd.enabled and kd.source == "offline"


def teach_with_topk(kd: KdConfig, teacher: TeacherConfig, student_model: str, problems: list[Problem],
                    out_dir: Path, judging: Judging) -> tuple[list[Sample], dict[str, Any]]:  # fmt: skip
    """The teach stage with offline KD: the teacher records its top-`kd.top_k` log-probs per token; the
    vocabulary contract is checked first (llamacpp: the GGUF's tokenizer, transformers: the model dir's,
    http: `kd.teacher_tokenizer` when given, and the responses' token texts always); the records go to
    `out_dir/topk.npz`, their sizes into the stats. `judging`: the run's tolerance and sandbox mode."""
    from edge_distill.errors import ConfigError
    from edge_distill.models import load_tokenizer, resolve_model
    from edge_distill.teach import teach
    from edge_distill.teachers.topk import PieceMap, storage_per_samples, write_store
    from edge_distill.teachers.vocab import hf_content, piece_map, require_same, teacher_content

    tokenizer = load_tokenizer(resolve_model(student_model))
    student = hf_content(tokenizer, f"the student's ({student_model})")
    spec = kd.teacher_tokenizer or (
        teacher.model if teacher.backend in ("llamacpp", "transformers") else None
    )
    if spec is not None:
        require_same(teacher_content(spec), student)
    pieces = PieceMap(piece_map(tokenizer), len(tokenizer)) if teacher.backend == "http" else None
    client = build_teacher(teacher, logprobs=kd.top_k, pieces=pieces)
    records: dict[str, Any] = {}
    try:
        samples, stats = teach(
            client,
            problems,
            teacher.strategies,
            teacher.samples_per_strategy,
            judging=judging,
            topk_out=records,
        )
        if hasattr(client, "report"):
            stats["teacher_calls"] = client.report()
    finally:
        if hasattr(client, "close"):
            client.close()
    tokens = sum(r.n for r in records.values())
    unknown = sum(int((r.tokens < 0).sum()) for r in records.values())
    if tokens and unknown > 0.05 * tokens:
        raise ConfigError(
            f"train.kd: {unknown} of {tokens} tokens the teacher {client.name} generated are not tokens of the "
            f"student's tokenizer {student.describe()}: teacher and student do not share a vocabulary (or the "
            "server renders tokens differently); set train.kd.teacher_tokenizer to check it by content"
        )
    store = write_store(
        out_dir / "topk.npz", records, {"tokenizer": student.fingerprint(), "teacher": client.name}
    )
    stats["kd_topk"] = {**store, "unknown_tokens": unknown, **storage_per_samples(records.values(), kd.top_k)}
    return samples, stats


def live_teacher_pairs(
    teacher: TeacherConfig, judged: Path, out_dir: Path, judging: Judging
) -> list[Any] | None:
    """EDIT's dual-CoT pairs from re-prompting a live teacher (AHP for each wrong CoT, CCP for each right one)
    on its own judged samples (`teach/samples.jsonl`, right and wrong). None when the teacher cannot be
    re-prompted (recorded): the objective then builds offline twins. Saved to `out_dir/edit_pairs.jsonl`
    (+ `edit_pairs_stats.json`) once, so a resumed run makes no second teacher call."""
    from edge_distill.objectives.edit import DualPair, live_pairs
    from edge_distill.teachers.factory import sampling_from_config

    cached = out_dir / "edit_pairs.jsonl"
    if cached.is_file():
        return [DualPair.from_dict(r) for r in read_jsonl(cached)]
    client = build_teacher(teacher)
    try:
        if not callable(getattr(client, "complete", None)):
            return None
        pairs, stats = live_pairs(
            client, load_samples(judged), sampling_from_config(teacher), k=teacher.samples_per_strategy,
            judging=judging,
        )  # fmt: skip
    finally:
        if hasattr(client, "close"):
            client.close()
    write_json(out_dir / "edit_pairs_stats.json", stats)
    write_jsonl(cached, (p.to_dict() for p in pairs))
    return pairs


# ---------------------------------------------------------------------------------------------- train / eval
def train_student(train: TrainConfig, samples: list[Sample], base_model: str | Path, out_dir: Path, *,
                  seed: int, judging: Judging, pairs: list[Any] | None = None,
                  step1_model: Path | None = None, topk: Path | None = None) -> Path:  # fmt: skip
    """Train on `samples` with `train.objective`; return the trained model/adapter directory.

    The one function the pipeline's train stage and the SIKeD/FDD loops call for each training run: the
    loops decide the data, the objective (looked up once in `objectives.build.OBJECTIVES`) the loss.
    `pairs`: live-teacher EDIT pairs (`live_teacher_pairs`); without them EDIT uses offline twins.
    `step1_model`: EDIT's step 1, already trained (`reused_sft`). `judging`: EDIT judges its pairs with it.
    `topk`: the run's `teach/topk.npz` (`train.kd` offline).
    """
    from edge_distill.objectives.build import train_with_objective

    return train_with_objective(
        train,
        samples,
        base_model,
        out_dir,
        seed=seed,
        pairs=pairs,
        step1_model=step1_model,
        judging=judging,
        topk=topk,
    )


def decode_student(
    ev: EvalConfig, train: TrainConfig, model_dir: Path, problems: list[Problem], judging: Judging
) -> Any:
    """Decode and judge `problems` with the decoding the objective trained for (CasCoD: two stages), judged
    with `judging` (the run's tolerance and sandbox mode)."""
    from edge_distill.eval import evaluate
    from edge_distill.fastpath import inference_dtype
    from edge_distill.objectives.build import generate_fn_for
    from exporters.chat_template import check_trained_prompt

    check_trained_prompt(model_dir)  # trained on an older prompt format: refuse, do not mis-measure
    return evaluate(
        model_dir,
        problems,
        strategy=ev.strategy,
        batch_size=ev.batch_size,
        max_new_tokens=ev.max_new_tokens,
        generate_fn=generate_fn_for(train),
        dtype=inference_dtype(train.precision),
        engine=ev.engine,
        judging=judging,
    )


def evaluate_student(ev: EvalConfig, train: TrainConfig, model_dir: Path, problems: list[Problem],
                     out_dir: Path, split: str, judging: Judging) -> Any:  # fmt: skip
    """`decode_student` on the first `eval.limit` problems; writes `out_dir/{split}*`."""
    from edge_distill.eval import write_eval

    result = decode_student(
        ev, train, model_dir, list(problems[: ev.limit] if ev.limit else problems), judging
    )
    write_eval(result, out_dir, split)
    return result


def paired_against(baseline_predictions: Path, predictions: Path) -> dict[str, Any]:
    """Paired comparison (McNemar, bootstrap over problems) of two prediction files of the same problems."""
    from edge_distill.eval import correct_by_id
    from edge_distill.stats import paired_comparison

    return paired_comparison(
        correct_by_id(read_jsonl(baseline_predictions)), correct_by_id(read_jsonl(predictions))
    )


# ---------------------------------------------------------------------------------------------- reuse
# train keys that may differ between an SFT run and a run reusing it: they do not change SFT's training
_REUSE_FREE_TRAIN_KEYS = ("objective", "cascod", "edit", "reuse_sft", "report_to", "logging_steps")


def reused_sft(train: TrainConfig, student_model: str, run: RunDir) -> Path | None:
    """`train.reuse_sft`: the trained model of a finished plain-SFT run on exactly this run's teacher samples
    (EDIT's step 1, SIKeD's iteration 0), or None when the key is unset.

    The match is checked, not assumed: the other run's objective is `sft` without methods, its `student.model`
    and train settings equal this run's (keys that do not change SFT's training aside), and its
    `filter/train.jsonl` — the samples SFT trained on — is byte-identical to this run's."""
    from edge_distill.errors import ConfigError
    from edge_distill.rundir import RunDir, diff_keys

    if train.reuse_sft is None:
        return None
    where = f"train.reuse_sft={train.reuse_sft!r}"
    other = RunDir.open(train.reuse_sft)
    entry = other.stages().get("train", {})
    model = entry.get("summary", {}).get("model")
    if not model or entry.get("stale"):
        raise ConfigError(f"{where}: that run has no finished train stage; run it first")
    o = other.cfg
    if o.train.objective != "sft" or o.methods:
        raise ConfigError(
            f"{where}: that run is not plain SFT (objective {o.train.objective}, methods {o.methods})"
        )
    if o.student.model != student_model:
        raise ConfigError(
            f"{where}: its student.model is {o.student.model!r}, this run's is {student_model!r}"
        )

    def strip(t: TrainConfig) -> dict[str, Any]:
        return {k: v for k, v in t.model_dump(mode="json").items() if k not in _REUSE_FREE_TRAIN_KEYS}

    diff = diff_keys(strip(o.train), strip(train))
    if diff:
        raise ConfigError(
            f"{where}: its train settings differ from this run's ({', '.join(diff)}); SFT would differ"
        )
    mine, theirs = run.path / "filter" / "train.jsonl", other.path / "filter" / "train.jsonl"
    if not theirs.is_file() or theirs.read_bytes() != mine.read_bytes():
        raise ConfigError(
            f"{where}: its filter/train.jsonl differs from this run's: it was trained on other teacher samples "
            "(data.*, teacher.* and student.keep must match)"
        )
    return other.resolve(model)
