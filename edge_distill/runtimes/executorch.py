"""ExecuTorch (`.pte` export, export-time parity, the host bench), always in a process of its own.

Why a process apart (measured with executorch 1.5.1 + torchao 0.18.0, 2026-12): once torchao is importable,
transformers imports it on every `from_pretrained` (its torchao quantizer module): ~2 s and "Failed to load
..._C_mxfp8...so" plus pytree warnings on stderr for every command, training included. And executorch's declared
dependencies add coremltools, pandas, scikit-learn and hydra, which its export and runtime path never import. So
`scripts/setup.sh` installs executorch, torchao and the few modules that path imports (`--no-deps`) into
`<venv>/executorch-packages`, a directory that is on `PYTHONPATH` only for the worker process started here
(`edge_distill/runtimes/executorch_worker.py`, same interpreter and torch as the main environment). No main-env
process imports executorch or torchao.

Which interpreter runs the worker:
1. this interpreter, when it can import `executorch` itself (a device or an environment where ExecuTorch is
   installed directly, e.g. `pip install 'edge-distill[executorch]'`): no extra path;
2. else this interpreter with `sys.prefix/executorch-packages` (setup.sh's directory) on `PYTHONPATH`;
3. else `ExecuTorchMissing`, naming the setup command.

The protocol (JSON lines on the worker's stdin/stdout, raw float32 bytes after a `logits` answer) is in the worker's
docstring. Every answer is bounded (header line, blob size from the shape) and every call has a deadline; a worker
that dies or times out is killed and reported with the tail of its stderr.

Torch-free: this module imports neither torch nor executorch (numpy only for `logits`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_distill.errors import EdgeDistillError

log = logging.getLogger(__name__)

PACKAGES_DIR = "executorch-packages"  # under sys.prefix: scripts/setup.sh installs ExecuTorch there
SETUP_HINT = (
    "ExecuTorch is installed by `bash scripts/setup.sh` (into .venv/executorch-packages; "
    "EDGE_DISTILL_EXECUTORCH=0 skips it), or directly with pip install 'edge-distill[executorch]'"
)
MAX_REQUEST_BYTES = 8 << 20  # one request line: token ids or a prompt, far below this
MAX_HEADER_BYTES = 16 << 20  # one JSON answer line (an export report, token lists, a generated text)
MAX_BLOB_BYTES = 4 << 30  # logits: max_seq_len x vocab x 4 bytes (1,024 x 151,936 x 4 = 0.6 GiB for Qwen)
START_TIMEOUT_S = 300.0  # interpreter + executorch import on a loaded 2-core machine
CALL_TIMEOUT_S = 3600.0  # one forward / greedy run / generate
# torch.export + XNNPACK lowering: 43 min measured for SmolLM2-135M on a loaded host
EXPORT_TIMEOUT_S = 6 * 3600.0


class ExecuTorchError(EdgeDistillError):
    """The ExecuTorch worker failed, timed out or answered outside the protocol."""


class ExecuTorchMissing(ExecuTorchError):
    """Neither this interpreter nor setup.sh's directory provides ExecuTorch."""


@dataclass(frozen=True)
class Environment:
    python: str
    # the directory put in front of PYTHONPATH, or None when ExecuTorch imports directly
    pythonpath: str | None

    @property
    def where(self) -> str:
        return self.pythonpath or f"{self.python} (installed directly)"


def packages_dir() -> Path:
    return Path(sys.prefix) / PACKAGES_DIR


def environment() -> Environment:
    """The interpreter (and extra path) the ExecuTorch worker runs with; ExecuTorchMissing if there is none."""
    if importlib.util.find_spec("executorch") is not None:
        return Environment(sys.executable, None)
    side = packages_dir()
    if (side / "executorch").is_dir():
        return Environment(sys.executable, str(side))
    raise ExecuTorchMissing(f"ExecuTorch is not installed for {sys.executable} (no {side}): {SETUP_HINT}")


def available() -> bool:
    try:
        environment()
    except ExecuTorchMissing:
        return False
    return True


def _worker_env(env: Environment) -> dict[str, str]:
    out = dict(os.environ)
    if env.pythonpath:
        out["PYTHONPATH"] = os.pathsep.join(p for p in (env.pythonpath, out.get("PYTHONPATH", "")) if p)
    out.setdefault("PYTHONUNBUFFERED", "1")
    return out


class Worker:
    """One ExecuTorch worker process and its request/answer protocol."""

    module = "edge_distill.runtimes.executorch_worker"  # what the worker process runs (`python -m`)

    def __init__(self, *, start_timeout_s: float = START_TIMEOUT_S):
        self.env = environment()
        self._stderr = tempfile.TemporaryFile(prefix="edge-distill-executorch-")  # noqa: SIM115 - closed in close()
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            [self.env.python, "-m", self.module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=_worker_env(self.env),
            bufsize=0,
        )
        self._buf = bytearray()
        self.hello = self.call("hello", timeout_s=start_timeout_s)
        log.debug("ExecuTorch worker pid %s from %s", self.hello.get("pid"), self.env.where)

    # -- protocol --------------------------------------------------------------------------------------------
    def call(self, op: str, *, timeout_s: float = CALL_TIMEOUT_S, **args: Any) -> Any:
        result, _ = self._request(op, timeout_s, args)
        return result

    def call_blob(self, op: str, *, timeout_s: float = CALL_TIMEOUT_S, **args: Any) -> tuple[Any, bytes]:
        return self._request(op, timeout_s, args)

    def _request(self, op: str, timeout_s: float, args: dict[str, Any]) -> tuple[Any, bytes]:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise ExecuTorchError(f"ExecuTorch worker: {op!r} after close")
        deadline = time.monotonic() + timeout_s
        request = json.dumps({"op": op, **args}).encode("utf-8") + b"\n"
        if len(request) > MAX_REQUEST_BYTES:
            raise ExecuTorchError(
                f"ExecuTorch worker, {op}: a request of {len(request)} bytes (bound {MAX_REQUEST_BYTES})"
            )
        try:
            proc.stdin.write(request)
            proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise self._died(op, f"cannot send the request ({e})") from None
        line = self._read_line(op, deadline)
        try:
            header = json.loads(line)
            ok, nbytes = bool(header["ok"]), int(header.get("nbytes", 0))
        except (ValueError, KeyError, TypeError) as e:
            raise self._fail(op, f"answer outside the protocol ({e}): {line[:200]!r}") from None
        if not ok:
            raise ExecuTorchError(f"ExecuTorch worker, {op}: {str(header.get('error'))[:4000]}")
        if not 0 <= nbytes <= MAX_BLOB_BYTES:
            raise self._fail(op, f"announced {nbytes} bytes, over the {MAX_BLOB_BYTES} bound")
        return header.get("result"), self._read_exact(op, nbytes, deadline)

    def _fill(self, op: str, deadline: float) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise self._fail(op, "no answer in time")
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            raise self._died(op, "the worker exited")
        self._buf += chunk

    def _read_line(self, op: str, deadline: float) -> bytes:
        start = 0
        while (end := self._buf.find(b"\n", start)) < 0:
            if len(self._buf) > MAX_HEADER_BYTES:
                raise self._fail(op, f"an answer line over {MAX_HEADER_BYTES} bytes")
            start = len(self._buf)
            self._fill(op, deadline)
        line = bytes(self._buf[:end])
        del self._buf[: end + 1]
        return line

    def _read_exact(self, op: str, n: int, deadline: float) -> bytes:
        while len(self._buf) < n:
            self._fill(op, deadline)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def stderr_tail(self, n: int = 3000) -> str:
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - n))
            return self._stderr.read().decode("utf-8", errors="replace").strip()
        except (OSError, ValueError):
            return ""

    def _died(self, op: str, what: str) -> ExecuTorchError:
        rc = self._proc.wait(timeout=10) if self._proc is not None else None
        return self._fail(op, f"{what} (exit code {rc})")

    def _fail(self, op: str, what: str) -> ExecuTorchError:
        """The worker is out of step (dead, late, or off the protocol): kill it and say why."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        tail = self.stderr_tail()
        self.close()
        return ExecuTorchError(
            f"ExecuTorch worker ({self.env.where}), {op}: {what}"
            + (f"; its stderr ends:\n{tail}" if tail else "")
        )

    def close(self) -> None:
        """End the worker: EOF on its stdin ends it; killed if it has not exited 10 s later."""
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
                proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        try:
            self._stderr.close()
        except OSError:
            pass

    def __del__(self) -> None:  # a worker is never left behind
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown
            pass


# -- export --------------------------------------------------------------------------------------------------
def export_pte(model_dir: Path, out_file: Path, quant: str, *, max_seq_len: int, threads: int | None = None,
               timeout_s: float = EXPORT_TIMEOUT_S) -> dict[str, Any]:  # fmt: skip
    """exporters.executorch_pte.build_pte in the ExecuTorch worker; returns its quantization report."""
    worker = Worker()
    try:
        return dict(
            worker.call(
                "export",
                timeout_s=timeout_s,
                model_dir=str(Path(model_dir).resolve()),
                out_file=str(Path(out_file).resolve()),
                quant=quant,
                max_seq_len=max_seq_len,
                threads=threads,
            )  # fmt: skip
        )
    finally:
        worker.close()


class ExecuTorchProgram:
    """A package's model.pte (and optionally its tokenizer.json, for the runners' C++ HFTokenizer) open in a
    worker. exporters.parity.ExecuTorchRuntime and device_profiles.runtimes.ExecuTorchSession wrap it."""

    def __init__(self, pte_path: Path, threads: int, tokenizer_json: Path | None = None):
        self.worker = Worker()
        try:
            info = self.worker.call("open", pte=str(Path(pte_path).resolve()), threads=int(threads),
                                    tokenizer=str(Path(tokenizer_json).resolve()) if tokenizer_json else None)  # fmt: skip
        except Exception:
            self.worker.close()
            raise
        self.max_seq_len = int(info["max_seq_len"])
        self.eos_ids = {int(i) for i in info["eos_ids"]}

    def logits(self, ids: list[int]) -> Any:
        """Logits [len(ids), V] (numpy float32) of `ids` from cache position 0."""
        import numpy as np

        meta, blob = self.worker.call_blob("logits", ids=[int(i) for i in ids], pos=0)
        shape = tuple(int(d) for d in meta["shape"])
        if len(shape) != 2 or shape[0] != len(ids) or len(blob) != 4 * shape[0] * shape[1]:
            raise ExecuTorchError(f"ExecuTorch worker, logits: {len(blob)} bytes for shape {shape}")
        return np.frombuffer(blob, dtype=np.float32).reshape(shape)

    def nll(self, ids: list[int]) -> float:
        """Mean NLL of ids[1:] given the logits of ids[:-1] (float64 log-softmax in the worker)."""
        return float(self.worker.call("nll", ids=[int(i) for i in ids]))

    def greedy(self, ids: list[int], n: int, *, stop_at_eos: bool) -> tuple[list[int], list[float]]:
        """Up to `n` greedy tokens after `ids` and, for each, the seconds since the call began (timed in the
        worker: prefill in one call, then one call per token; no protocol overhead in the timestamps)."""
        res = self.worker.call("greedy", ids=[int(i) for i in ids], n=int(n), stop_at_eos=stop_at_eos)
        return [int(t) for t in res["tokens"]], [float(t) for t in res["times"]]

    def encode(self, text: str) -> list[int]:
        return [int(i) for i in self.worker.call("encode", text=text)]

    def generate(self, prompt: str, max_new_tokens: int, stop_at_answer: bool = False) -> str:
        """Greedy text until EOS or `max_new_tokens`; with `stop_at_answer`, cut where the answer is complete."""
        return str(self.worker.call("generate", prompt=prompt, max_new_tokens=int(max_new_tokens),
                                    stop_at_answer=bool(stop_at_answer)))  # fmt: skip

    def rss_mb(self) -> tuple[float, float]:
        """(before the model was loaded, peak) RSS of the worker process, MiB."""
        res = self.worker.call("rss")
        return float(res["baseline_mb"]), float(res["peak_mb"])

    def close(self) -> None:
        self.worker.close()


def check() -> dict[str, Any]:
    """Start a worker and have it import everything export and runtime need (setup.sh runs this after
    installing); returns the versions it found."""
    worker = Worker()
    try:
        return {**worker.call("check"), "python": worker.env.python, "packages": worker.env.pythonpath}
    finally:
        worker.close()


if __name__ == "__main__":
    if sys.argv[1:] != ["--check"]:
        raise SystemExit("usage: python -m edge_distill.runtimes.executorch --check")
    try:
        print(json.dumps(check()))
    except ExecuTorchError as e:
        raise SystemExit(f"edge-distill: {e}") from None
