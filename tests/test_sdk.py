"""The Python API (issue 23): cheap to import, typed results, EdgeDistillError subclasses, the Python API
example of docs/usage.md executed as written (so it cannot drift), and a standalone eval/bench of a run
judging exactly as the run did (its answers.rel_tol and sandbox.mode, passed down explicitly) on a tiny
real run."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from click.testing import CliRunner

import edge_distill as ed
from edge_distill.errors import ConfigError, DataError, EdgeDistillError

ROOT = Path(__file__).resolve().parents[1]
FIX = Path(__file__).parent / "fixtures" / "published"


def test_import_is_cheap_and_the_api_resolves_lazily() -> None:
    code = (
        "import json, sys, edge_distill as ed\n"
        "before = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'transformers', 'datasets', 'peft', 'llama_cpp', 'onnxruntime', 'numpy', 'edge_distill'))\n"
        "fns = [ed.run, ed.evaluate, ed.export, ed.bench, ed.load_problems]\n"
        "after = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'datasets'))\n"
        "print(json.dumps({'before': before, 'after': after, 'mods': [f.__module__ for f in fns]}))\n"
    )
    out = json.loads(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert out["before"] == ["edge_distill", "edge_distill.errors"]
    assert out["after"] == [] and set(out["mods"]) == {"edge_distill.sdk"}
    for name in ed.__all__:  # every advertised name resolves
        assert getattr(ed, name) is not None, name
    with pytest.raises(AttributeError):
        ed.no_such_thing  # noqa: B018


def test_errors_are_edge_distill_errors_naming_what_to_fix(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="train.lr"):
        ed.run(None, runs_dir=str(tmp_path / "runs"), train={"lr": -1})
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ConfigError, match="not a run directory"):
        ed.evaluate(tmp_path, "builtin:gsm8k-sample")
    with pytest.raises(ConfigError, match="rel_tol"):
        ed.evaluate(tiny_model_dir, "builtin:gsm8k-sample", rel_tol=0.5)
    with pytest.raises(DataError, match="data file not found"):
        ed.load_problems(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match="FORMAT:QUANT"):
        ed.export(tiny_model_dir, ["gguf"])
    with pytest.raises(EdgeDistillError, match="not a model directory|neither a run directory"):
        ed.export(tmp_path, ["gguf:q8_0"])
    assert issubclass(ConfigError, EdgeDistillError) and issubclass(DataError, EdgeDistillError)


def test_overrides_as_keywords_mean_the_same_as_cli_overrides() -> None:
    from edge_distill.config import load_config
    from edge_distill.sdk import _config

    cfg = _config(None, {"train__lr": 1e-4, "eval": {"limit": 3}, "data.dev_size": 5, "name": "x"})
    assert cfg == load_config(None, ["train.lr=1e-4", "eval.limit=3", "data.dev_size=5", "name=x"])
    assert cfg.eval.max_new_tokens == 320  # a section dict merges, it does not replace the section


# --------------------------------------------------------------------------------------------- tiny run
_CONFIG = """\
runs_dir: runs
student: {{model: {model}}}
data: {{limit_train: 8, dev_size: 4}}
teacher: {{cache: null}}
train: {{max_steps: 2, batch_size: 4, save_steps: 2, lr: 0.003}}
eval: {{max_new_tokens: 12, batch_size: 4}}
sandbox: {{mode: weak}}
"""


def _readme_example() -> str:
    text = (ROOT / "docs" / "usage.md").read_text(encoding="utf-8")
    section = text[text.index("## Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory: pytest.TempPathFactory):
    """The Python API example of docs/usage.md, executed as written in a directory holding what it names: an
    edge-distill.yaml (a tiny random Llama as the student, a few steps) and SVAMP.json as published."""
    pytest.importorskip("llama_cpp")
    from tests.tiny_models import build_tiny_llama

    model = build_tiny_llama(tmp_path_factory.mktemp("tiny-sdk"), vocab_size=384)
    work = tmp_path_factory.mktemp("readme")
    (work / "edge-distill.yaml").write_text(_CONFIG.format(model=model))
    shutil.copy(FIX / "SVAMP.json", work / "SVAMP.json")
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    try:
        namespace: dict[str, object] = {}
        exec(compile(_readme_example(), "docs/usage.md (Python API)", "exec"), namespace)  # noqa: S102
    finally:
        mp.undo()
    return namespace, work


@pytest.mark.slow
@pytest.mark.integration
def test_readme_python_api_example_runs_as_written(readme_run) -> None:
    ns, work = readme_run
    result, svamp, report, package, bench = (ns[k] for k in ("result", "svamp", "report", "package", "bench"))
    assert isinstance(result, ed.RunResult) and result.path == Path("runs") / "api-demo"
    assert (work / result.path / "stages.json").is_file() and result.eval["dev"]["n"] == 4
    assert result.gates_passed is None  # no bench in this config
    assert isinstance(svamp, ed.LoadedProblems) and len(svamp) == 3 and svamp.layout == "svamp"
    assert isinstance(report, ed.EvalReport)
    assert [(r.model, r.problems, r.summary["n"]) for r in report.rows] == [
        ("baseline", "svamp:SVAMP.json", 3),
        ("student", "svamp:SVAMP.json", 3),
    ]
    assert report.rows[1].vs_reference["reference"] == "baseline"
    assert (work / "eval-svamp" / "eval.md").read_text().strip() == report.table()
    assert isinstance(package, ed.ExportedPackage) and package.format == "gguf" and package.quant == "q4_k_m"
    assert (work / package.path / "manifest.json").is_file() and not package.signed
    assert isinstance(bench, ed.BenchResult) and [r.profile for r in bench.reports] == ["host"]
    assert bench.reports[0].accuracy is not None and bench.reports[0].accuracy.n == 4


@pytest.mark.slow
@pytest.mark.integration
def test_standalone_eval_and_bench_judge_with_the_runs_tolerance_and_sandbox_mode(
    readme_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's answers.rel_tol and sandbox.mode reach eval --model and bench with no process-wide state:
    the same predictions are right or wrong by the tolerance of the run they come from, and a run in weak
    mode runs PoT where strict is refused."""
    import functools

    from edge_distill import sandbox
    from edge_distill.cli import main

    _, work = readme_run
    run = work / "runs" / "api-demo"
    monkeypatch.chdir(tmp_path)

    def table(*args: str) -> list[dict]:
        res = CliRunner().invoke(main, ["eval", "--model", str(run), *args, "--out", "o"])
        assert res.exit_code == 0, res.output
        return json.loads((tmp_path / "o" / "eval.json").read_text())["rows"]

    # the student's own predictions on 8 problems, then golds 0.5 % away from every numeric one
    rows = table("--problems", "builtin:gsm8k-sample", "--limit", "8", "--fresh")
    preds = [json.loads(x) for x in (tmp_path / "o" / "student__builtin_gsm8k-sample.predictions.jsonl").read_text().splitlines()]  # fmt: skip
    numeric = [p for p in preds if p["pred"] is not None and re.fullmatch(r"-?\d+(\.\d+)?", p["pred"])]
    assert numeric, "the tiny student produced no number at all; cannot test the tolerance"
    near = tmp_path / "near.jsonl"
    near.write_text("".join(json.dumps({"id": p["id"], "question": p["question"],
                                        "answer": str(float(Fraction(p["pred"]) * Fraction(1005, 1000) + Fraction(1, 200)))}) + "\n"
                            for p in numeric))  # fmt: skip
    exact = table("--problems", str(near), "--fresh")  # the run's rel_tol, 1e-4
    loose = table("--problems", str(near), "--fresh", "--rel-tol", "0.01")
    student = [r for r in exact if r["model"] == "student"][0]
    assert student["correct"] == 0
    assert [r for r in loose if r["model"] == "student"][0]["correct"] == len(numeric)
    # a copy of the run whose config says answers.rel_tol 0.01: no flag needed, the run's value is used
    copy = work / "runs" / "api-demo-loose"
    if not copy.exists():
        shutil.copytree(run, copy)
        cfg = (copy / "config.yaml").read_text().replace("rel_tol: 0.0001", "rel_tol: 0.01")
        (copy / "config.yaml").write_text(cfg.replace("name: api-demo", "name: api-demo-loose"))
    res = CliRunner().invoke(
        main, ["eval", "--model", str(copy), "--problems", str(near), "--fresh", "--out", "c"]
    )
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "c" / "eval.json").read_text())
    assert rows["judging"]["rel_tol"] == 0.01
    assert [r for r in rows["rows"] if r["model"] == "student"][0]["correct"] == len(numeric)

    # sandbox mode: where the OS boundary is unavailable, the run's weak mode runs PoT, strict refuses
    monkeypatch.setattr(sandbox, "_POOLS", {})
    monkeypatch.setattr(
        sandbox, "SandboxPool", functools.partial(sandbox.SandboxPool, _simulate_no_boundary=True)
    )
    try:
        args = [
            "eval",
            "--model",
            str(run),
            "--problems",
            "dev",
            "--strategy",
            "pot",
            "--limit",
            "2",
            "--out",
            "p",
        ]
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 0, res.output
        assert set(sandbox._POOLS) == {"weak"}
        res = CliRunner().invoke(main, [*args, "--sandbox-mode", "strict"])
        assert res.exit_code == 2 and "cannot establish its OS isolation boundary" in res.output
        pkg = work / "runs" / "api-demo" / "export" / "gguf-q4_k_m"
        bench = ed.bench(pkg, "host", accuracy_limit=2, repetitions=1, strategy="pot")
        assert bench.reports[0].accuracy.n == 2
        assert (
            bench.reports[0].accuracy.source_accuracy is None
        )  # a forced strategy: not the source's decoding
        with pytest.raises(sandbox.SandboxUnavailable):
            ed.bench(pkg, "host", accuracy_limit=2, repetitions=1, strategy="pot", sandbox_mode="strict")
    finally:
        for pool in sandbox._POOLS.values():
            pool.close()
