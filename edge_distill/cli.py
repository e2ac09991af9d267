"""The `edge-distill` command. Thin: run/teach/train/eval/export/bench each parse their flags, call one
function of the Python API (`edge_distill.sdk`: run, evaluate, export, bench) and print its typed result, so
the CLI and the API cannot drift. Library errors (EdgeDistillError) become one clear message and exit code
2. Heavy imports happen inside commands so `edge-distill bench`/`profiles` work on a device install without
torch.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from edge_distill.errors import EdgeDistillError, printable

log = logging.getLogger("edge_distill")

EXIT_USAGE = 2
EXIT_GATE_FAILED = 3


# An error message is read by a person: past this it is user input echoed back, not information.
_MAX_MESSAGE_CHARS = 4000


def _echo(text: str, err: bool = False) -> None:
    """Everything the CLI prints: through `errors.printable` (messages carry server, device and model text)."""
    click.echo(printable(text), err=err)


def _fail(message: str) -> None:
    if len(message) > _MAX_MESSAGE_CHARS:
        message = message[:_MAX_MESSAGE_CHARS] + f"... ({len(message)} characters in all)"
    _echo(f"error: {message}", err=True)
    sys.exit(EXIT_USAGE)


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        import sqlite3

        try:
            return super().invoke(ctx)
        except EdgeDistillError as e:
            _fail(str(e))
        except OSError as e:
            # The environment, not a bug: disk full, permissions, a path that is a file. One line naming
            # the path; the library turns most of these into EdgeDistillError already, this is the net.
            where = f"{e.filename}: " if e.filename else ""
            _fail(
                f"{where}{e.strerror or e}; fix that location (or free space) and rerun, --resume keeps finished stages"
            )
        except sqlite3.DatabaseError as e:
            # Only the teacher cache is SQLite: damaged or not a database at all.
            _fail(
                f"the teacher cache is unusable ({e}): move the file aside (teacher.cache, default "
                "~/.cache/edge-distill/teacher.sqlite) or run uncached with teacher.cache=null"
            )
        except KeyboardInterrupt:
            _echo("interrupted: finished stages are kept; continue with --resume", err=True)
            sys.exit(130)


def _setup_logging(verbose: int) -> None:
    from edge_distill.console import setup_logging

    # tqdm-safe handler, warnings routed into logging, third-party noise filtered (edge_distill.console)
    setup_logging(logging.DEBUG if verbose > 1 else logging.INFO if verbose >= 0 else logging.WARNING)


@click.group(cls=_Group)
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.version_option(package_name="edge-distill")
def main(verbose: int, quiet: bool) -> None:
    """Distill math reasoning into a small student and ship it to edge devices."""
    _setup_logging(-1 if quiet else verbose)


def _load(config: str | None, overrides: tuple[str, ...]):
    from edge_distill.config import load_config

    # CONFIG is optional: `edge-distill run name=x train.lr=1e-4` runs the defaults with overrides.
    if config is not None and "=" in config and not Path(config).exists():
        overrides = (config, *overrides)
        config = None
    return load_config(config, list(overrides))


_config_arg = click.argument("config", type=click.Path(dir_okay=False), required=False)
_overrides_arg = click.argument("overrides", nargs=-1)


@main.command()
@click.argument("path", type=click.Path(dir_okay=False), default="edge-distill.yaml")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(path: str, force: bool) -> None:
    """Write a commented starter config to PATH."""
    from edge_distill.starter import write_starter_config

    write_starter_config(Path(path), force=force)
    _echo(f"wrote {path}: edit it, then run `edge-distill run {path}`")


def _run(config, overrides, *, resume=False, overwrite=False, until=None, redo=None):
    from edge_distill import sdk

    result = sdk.run(_load(config, overrides), resume=resume, overwrite=overwrite, until=until, redo=redo)
    _echo(f"run directory: {result.path}" + (f"\nreport: {result.report}" if result.report else ""))
    return result


@main.command()
@_config_arg
@_overrides_arg
@click.option(
    "--resume", is_flag=True, help="Continue an existing run directory; finished stages are skipped."
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Empty the existing run directory first; only a directory that is an edge-distill run "
    "(its config.yaml names it) inside runs_dir, never anything else.",
)
def run(config: str | None, overrides: tuple[str, ...], resume: bool, overwrite: bool) -> None:
    """Run the whole pipeline: data, teach, filter, train (or SIKeD/FDD loops), eval, export, bench.

    CONFIG is a YAML file (default: the built-in quickstart defaults); OVERRIDES are key=value pairs,
    e.g. `train.lr=1e-4 eval.limit=50`.
    """
    r = _run(config, overrides, resume=resume, overwrite=overwrite)
    if r.gates_passed is False:
        _echo("a device gate failed: see bench/ in the run directory", err=True)
        sys.exit(EXIT_GATE_FAILED)


@main.command()
@_config_arg
@_overrides_arg
def teach(config: str | None, overrides: tuple[str, ...]) -> None:
    """Run the data and teach stages: teacher samples into <run>/teach/samples.jsonl."""
    _run(config, overrides, until="teach", redo="teach")


@main.command()
@_config_arg
@_overrides_arg
def train(config: str | None, overrides: tuple[str, ...]) -> None:
    """Train the student (runs data/teach/filter first if they are not finished)."""
    _run(config, overrides, until="train", redo="train")


_rel_tol_opt = click.option(
    "--rel-tol",
    type=click.FloatRange(0, 0.01),
    help="Answer tolerance (default: the run's answers.rel_tol, 1e-4).",
)
_sandbox_mode_opt = click.option(
    "--sandbox-mode",
    type=click.Choice(["strict", "weak"]),
    help="PoT sandbox mode (default: the run's sandbox.mode, else $EDGE_DISTILL_SANDBOX_MODE or strict).",
)


@main.command(name="eval")
@_config_arg
@_overrides_arg
@click.option("--model", "models", multiple=True, metavar="DIR",
              help="A run dir (its baseline, student and packages), HF or LoRA dir, or GGUF/ONNX package; repeat.")  # fmt: skip
@click.option("--problems", "problem_sets", multiple=True, metavar="FILE|SPEC",
              help="A problems file or dataset spec, or dev/train/test of the run; repeat (default: the run's dev).")  # fmt: skip
@click.option("--strategy", type=click.Choice(["auto", "cot", "l2m", "pot"]), help="Force a strategy (default: the run's eval.strategy, auto).")  # fmt: skip
@click.option("--max-new-tokens", type=click.IntRange(min=1), help="Decoding budget (default: the run's eval.max_new_tokens, 320).")  # fmt: skip
@click.option("--batch-size", type=click.IntRange(min=1), help="Prompts per forward pass (torch models).")
@click.option("--limit", type=click.IntRange(min=1), help="The first N problems of every set.")
@click.option("--fresh", is_flag=True, help="Evaluate everything again instead of reusing the run's own predictions.")  # fmt: skip
@click.option("--question-field", metavar="FIELD|TEMPLATE", help='Question field of a file in an unrecognised layout, or a template: "{Body} {Question}".')  # fmt: skip
@click.option(
    "--answer-field", metavar="FIELD", help="Gold-answer field (a number, a list, '#### N', '9 (apples)')."
)
@click.option("--id-field", metavar="FIELD", help="Id field (default: a hash of the question).")
@click.option("--skip-malformed", is_flag=True, help="Skip and count malformed rows instead of stopping.")
@_rel_tol_opt
@_sandbox_mode_opt
@click.option("--out", type=click.Path(file_okay=False), default="eval-results", show_default=True,
              help="Where eval.json, eval.md and the predictions go (with --model).")  # fmt: skip
def eval_cmd(
    config, overrides, models, problem_sets, strategy, max_new_tokens, batch_size, limit, fresh, question_field,
    answer_field, id_field, skip_malformed, rel_tol, sandbox_mode, out,
):  # fmt: skip
    """Evaluate models on problem sets, or (with CONFIG) re-run a run's eval stage.

    \b
    edge-distill eval --model runs/quickstart                 baseline, student and packages on its dev split
    edge-distill eval --model runs/quickstart --problems SVAMP.json --problems test
    edge-distill eval --model runs/quickstart --problems asdiv:ASDiv.xml --problems hf:openai/gsm8k:main
    edge-distill eval --model my-hf-model --model export/gguf-q4_k_m --problems problems.jsonl
    edge-distill eval cfg.yaml eval.final_test=true           the run's eval stage (later stages go stale)

    Problem files are read as published (GSM8K, SVAMP, ASDiv, MultiArith/AddSub/SingleEq, MAWPS,
    LLM-Adapters, ToRA, GSM-Hard, MATH: recognised by their fields, or named NAME:PATH); rows whose gold is
    not a number are skipped and counted in the table. Decoding and judging (answers.rel_tol, sandbox.mode)
    are the run's unless flags say otherwise. Every row is judged by the same scorer and paired against the
    reference on the same problems (a run's untrained baseline, else the first model): delta, paired
    bootstrap 95% CI, exact McNemar p.
    """
    options = (problem_sets, strategy, max_new_tokens, batch_size, limit, fresh, question_field, answer_field,
               id_field, skip_malformed, rel_tol, sandbox_mode)  # fmt: skip
    if not models:
        if any(o not in (None, False, ()) for o in options):
            raise click.UsageError("--problems/--strategy/--limit/--*-field/... go with --model")
        _run(config, overrides, until="eval", redo="eval")
        return
    if config is not None or overrides:
        raise click.UsageError("with --model, give no CONFIG or key=value overrides (use the options)")
    from edge_distill import sdk

    report = sdk.evaluate(
        list(models), list(problem_sets), strategy=strategy, max_new_tokens=max_new_tokens,
        batch_size=batch_size, limit=limit, fresh=fresh, out=out, question_field=question_field,
        answer_field=answer_field, id_field=id_field, skip_malformed=skip_malformed, rel_tol=rel_tol,
        sandbox_mode=sandbox_mode,
    )  # fmt: skip
    _echo(report.table())
    _echo(f"written: {Path(out) / 'eval.json'}, {Path(out) / 'eval.md'} and one predictions file per row")


@main.command()
@click.argument("source", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", required=True, help="A row of exporters.formats: gguf, onnx, executorch.")
@click.option(
    "--quant",
    required=True,
    help="gguf: f16 q8_0 q6_k q5_k_m q4_k_m q4_0 ...; onnx: int4 int8 fp32; executorch: fp32 int8 8da4w; auto: the "
    "smallest candidate meeting --auto-min-top1 / --auto-max-nll-ratio on held-out text (gguf q4_k_m..q8_0, onnx "
    "int4/int8, executorch 8da4w/int8)",
)
@click.option("--auto-min-top1", type=float, help="quant auto: min teacher-forced top-1 agreement (0.95).")
@click.option("--auto-max-nll-ratio", type=float, help="quant auto: max NLL ratio, export / source (1.05).")
@click.option(
    "--out", type=click.Path(file_okay=False), help="Package directory (default <run>/export/<fmt>-<quant>)."
)
@click.option("--archive", is_flag=True, help="Also write a single .tar.gz next to the package.")
@click.option("--overwrite", is_flag=True, help="Replace an existing package at the output path.")
@click.option(
    "--parity-prompts", default=3, show_default=True, help="Prompts for the greedy-token parity check."
)
@click.option(
    "--sign-key",
    type=click.Path(dir_okay=False),
    help="ed25519 private key (PEM, see `edge-distill keygen`): also write manifest.sig.",
)
@click.option(
    "--strategy",
    type=click.Choice(["auto", "cot", "l2m", "pot"]),
    help="Strategy the package's prompt and chat templates force (default: the run's eval.strategy, else "
    "auto). cot: answers never need a Python interpreter.",
)
def export(
    source: str,
    fmt: str,
    quant: str,
    out: str | None,
    archive: bool,
    parity_prompts: int,
    sign_key: str | None,
    auto_min_top1: float | None,
    auto_max_nll_ratio: float | None,
    strategy: str | None,
    overwrite: bool,
) -> None:
    """Export a run's student (or any HF/LoRA model dir) to a verified GGUF/ONNX package.

    An existing output path is never replaced unless it is an edge-distill package and --overwrite is given."""
    from edge_distill import sdk

    (pkg,) = sdk.export(
        source, [(fmt, quant)], out=out, archive=archive, parity_prompts=parity_prompts, sign_key=sign_key,
        strategy=strategy, auto_min_top1=auto_min_top1, auto_max_nll_ratio=auto_max_nll_ratio,
        overwrite=overwrite,
    )  # fmt: skip
    _echo(f"package: {pkg.path}" + (" (signed: manifest.sig)" if pkg.signed else ""))


@main.command()
@click.argument("package", type=click.Path(file_okay=False))
@click.option(
    "--public-key",
    type=click.Path(dir_okay=False),
    help="ed25519 public key: also require a valid manifest.sig by it.",
)
def verify(package: str, public_key: str | None) -> None:
    """Re-hash every file of an export package against its manifest (paths confined to the package)."""
    from exporters import verify as verify_package

    result = verify_package(package, public_key=public_key)
    if not result.ok:
        for problem in result.problems:
            _echo(f"MISMATCH {problem}", err=True)
        sys.exit(1)
    signed = ", signature valid" if result.signed else ""
    _echo(f"ok: {result.checked} files match {Path(package) / 'manifest.json'}{signed}")


@main.command()
@click.argument("key", type=click.Path(dir_okay=False))
def keygen(key: str) -> None:
    """Write a new ed25519 key pair for package signatures: KEY (private, mode 0600) and KEY.pub."""
    from exporters.signing import generate_keypair

    priv, pub = generate_keypair(key)
    _echo(f"private key: {priv} (keep it secret)\npublic key: {pub} (give it to whoever runs verify/bench)")


@main.command()
@click.argument("package", type=click.Path(file_okay=False))
@click.option(
    "--key", "key_path", type=click.Path(dir_okay=False), required=True, help="ed25519 private key."
)
def sign(package: str, key_path: str) -> None:
    """Sign an existing package (e.g. one `run` exported): verify it, then write manifest.sig."""
    from exporters import verify as verify_package
    from exporters.signing import load_private_key, sign_manifest

    key = load_private_key(key_path)
    result = verify_package(package)
    if not result.ok:
        for problem in result.problems:
            _echo(f"MISMATCH {problem}", err=True)
        _echo("refusing to sign a package that does not verify", err=True)
        sys.exit(1)
    _echo(f"signed: {sign_manifest(package, key)}")


@main.command()
@click.argument("packages", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--profile", "profiles", multiple=True, default=("host",), show_default=True,
              help="Profile name or YAML path; repeat for several.")  # fmt: skip
@click.option(
    "--problems",
    metavar="FILE|SPEC",
    help="Problems file in any published layout, or NAME:PATH / hf:<id> (no source comparison); default: the "
    "source run's --split, with its eval predictions.",
)
@click.option(
    "--split",
    type=click.Choice(["dev", "test"]),
    help="Split of the packages' source run (default dev); test without the run: the builtin GSM8K test slice.",
)
@click.option(
    "--accuracy-limit", default=50, show_default=True, help="Problems for quantized accuracy (0 = skip)."
)
@click.option("--repetitions", default=3, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default="bench-results", show_default=True)
@click.option(
    "--on-target/--on-host", default=None, help="Force measured (on the device) or estimated numbers."
)
@click.option(
    "--public-key",
    type=click.Path(dir_okay=False),
    help="ed25519 public key: refuse any package without a valid manifest.sig by it.",
)
@click.option(
    "--remote",
    metavar="ssh://USER@HOST[:PORT]",
    help="Measure on this device over SSH (key auth): measured rows, see device_profiles/README.md.",
)
@click.option(
    "--identity", type=click.Path(dir_okay=False), help="--remote: SSH private key (default: ssh's)."
)
@click.option(
    "--known-hosts",
    type=click.Path(dir_okay=False),
    help="--remote: known_hosts file holding the device's host key (default: ssh's).",
)
@click.option(
    "--remote-python",
    metavar="PATH",
    help="--remote: the device's Python (default the venv of check_device_install.sh --install-only).",
)
@click.option(
    "--remote-timeout", default=3600, show_default=True, help="--remote: seconds for the device run."
)
@click.option("--max-new-tokens", type=click.IntRange(min=1), help="Accuracy decoding budget (default: the source run's eval.max_new_tokens, 320).")  # fmt: skip
@click.option("--strategy", type=click.Choice(["auto", "cot", "l2m", "pot"]), help="Force a strategy (default: the source run's eval.strategy).")  # fmt: skip
@_rel_tol_opt
@_sandbox_mode_opt
def bench(packages, profiles, problems, split, accuracy_limit, repetitions, out, on_target, public_key, remote,
          identity, known_hosts, remote_python, remote_timeout, max_new_tokens, strategy, rel_tol,
          sandbox_mode) -> None:  # fmt: skip
    """Measure packages through their runtime and gate them against device budgets (exit 3 on a failed gate).

    Quantized accuracy is compared with the source model's on the same problems with the same decoder:
    the packages' run's dev split and its eval predictions, when that run directory is here; judged with
    that run's answers.rel_tol and sandbox.mode (or --rel-tol / --sandbox-mode)."""
    from edge_distill import sdk

    result = sdk.bench(
        list(packages), list(profiles), remote, problems=problems, split=split, accuracy_limit=accuracy_limit,
        repetitions=repetitions, out=out, on_target=on_target, public_key=public_key, identity=identity,
        known_hosts=known_hosts, remote_python=remote_python, remote_timeout=remote_timeout,
        max_new_tokens=max_new_tokens, strategy=strategy, rel_tol=rel_tol, sandbox_mode=sandbox_mode,
    )  # fmt: skip
    _echo(result.markdown())
    if not result.all_passed:
        _echo("a budget gate failed", err=True)
        sys.exit(EXIT_GATE_FAILED)


@main.command()
@click.option("--show", metavar="NAME", help="Print one profile in full.")
def profiles(show: str | None) -> None:
    """List the device profiles (shipped + ~/.config/edge-distill/profiles), or show one."""
    from device_profiles import profiles_text

    _echo(profiles_text(show))


if __name__ == "__main__":
    main()
