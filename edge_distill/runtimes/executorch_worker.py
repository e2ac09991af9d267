"""The ExecuTorch side of edge_distill/runtimes/executorch.py: runs *inside* ExecuTorch's environment (the
interpreter that can import executorch), started by the client as `python -m edge_distill.runtimes.executorch_worker`.

Protocol, one request at a time: the client writes one JSON line `{"op": ..., ...}` on stdin; the worker answers
one JSON line `{"ok": true, "result": ..., "nbytes": N}` (or `{"ok": false, "error": "..."}`) followed by N raw
bytes (the float32 logits of `logits`, row-major, shape in `result`). The protocol uses the process's original
stdout; fd 1 is pointed at stderr first, so whatever a library prints can never corrupt it.

Ops: `hello` (pid), `check` (imports what export and runtime need, and reports their versions), `export` (exporters.executorch_pte.build_pte), `open` (a package's model.pte + its
tokenizer.json), `logits`, `nll`, `greedy` (timed, one timestamp per token), `encode`/`decode` (the runners' C++
HFTokenizer; decoding with Hugging Face `tokenizers`), `generate` (text, optionally cut where the answer is complete,
`edge_distill.stopping`), `rss` (this process's baseline and peak RSS, for the bench).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from edge_distill.runtimes.executorch import MAX_REQUEST_BYTES


def _rss_mb(field: str) -> float:
    """VmRSS / VmHWM of this process in MiB (Linux), else psutil's rss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


class PteProgram:
    """The `forward` method of a package's model.pte in ExecuTorch's Python runtime."""

    def __init__(self, pte_path: Path, threads: int):
        # registers the quantized kernels (embedding_byte) the int8/8da4w programs call: without it a fresh process
        # fails to load their `forward` ("error: 0x14", operator missing; measured)
        import executorch.kernels.quantized  # noqa: F401
        import torch
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        self._torch = torch
        portable_lib._unsafe_reset_threadpool(threads)  # XNNPACK's thread pool, process-wide
        program = Runtime.get().load_program(Path(pte_path))
        self.method = program.load_method("forward")
        self.max_seq_len = int(program.load_method("get_max_seq_len").execute([])[0])
        eos = program.load_method("get_eos_ids") if "get_eos_ids" in program.method_names else None
        self.eos_ids = sorted({int(i) for i in eos.execute([])}) if eos is not None else []

    def forward(self, ids: list[int], pos: int) -> Any:
        """Logits [len(ids), V] (a float32 torch tensor) of `ids` placed at cache positions pos, pos+1, ..."""
        if not ids or pos < 0 or pos + len(ids) > self.max_seq_len:
            raise ValueError(
                f"{len(ids)} tokens at position {pos}: the package's KV cache holds {self.max_seq_len}"
            )
        t = self._torch
        out = self.method.execute([t.tensor([ids], dtype=t.long), t.tensor([pos], dtype=t.long)])[0]
        return out[0].float()

    def greedy(self, ids: list[int], n: int, *, stop_at_eos: bool):  # noqa: ANN201 - a generator of token ids
        """Greedy continuation of `ids` (prefill in one call, then one call per token), at most `n` tokens and
        never past the KV cache."""
        room = self.max_seq_len - len(ids)
        if room < 1:
            raise ValueError(f"prompt of {len(ids)} tokens fills the package's KV cache ({self.max_seq_len})")
        last = len(ids) + min(n, room)
        nxt = int(self.forward(ids, 0)[-1].argmax())
        for pos in range(len(ids), last):
            if stop_at_eos and nxt in self.eos_ids:
                return
            yield nxt
            if pos + 1 >= last:
                return
            nxt = int(self.forward([nxt], pos)[-1].argmax())


class RunnerTokenizer:
    """The tokenizer ExecuTorch's Android/iOS LLM runners use (pytorch-tokenizers' C++ HFTokenizer) for encoding;
    Hugging Face's decoder for text (the C++ one raises on a byte sequence that is not UTF-8, which model output
    may be)."""

    def __init__(self, tokenizer_json: Path):
        from pytorch_tokenizers.pytorch_tokenizers_cpp import HFTokenizer
        from tokenizers import Tokenizer

        self._tok = HFTokenizer()
        self._tok.load(str(tokenizer_json))
        if not self._tok.is_loaded():
            raise ValueError(f"{tokenizer_json}: ExecuTorch's HFTokenizer cannot load it")
        self._decoder = Tokenizer.from_file(str(tokenizer_json))

    def encode(self, text: str) -> list[int]:
        return [
            int(t) for t in self._tok.encode(text, 0, 0)
        ]  # no BOS, no EOS: the student's prompts have none

    def decode(self, ids: list[int]) -> str:
        return str(self._decoder.decode([int(t) for t in ids], skip_special_tokens=True))


class Worker:
    def __init__(self) -> None:
        self.program: PteProgram | None = None
        self.tokenizer: RunnerTokenizer | None = None
        self.baseline_mb = _rss_mb("VmRSS")

    def _program(self) -> PteProgram:
        if self.program is None:
            raise ValueError("no program open: send `open` first")
        return self.program

    def _tokenizer(self) -> RunnerTokenizer:
        if self.tokenizer is None:
            raise ValueError("no tokenizer open: `open` with a tokenizer.json first")
        return self.tokenizer

    def handle(self, req: dict[str, Any]) -> tuple[Any, bytes]:
        from importlib.metadata import version

        op = req.get("op")
        if op == "hello":
            return {"python": sys.executable, "pid": os.getpid()}, b""
        if op == "check":  # everything the export and the runtime import, imported now
            import executorch.kernels.quantized  # noqa: F401
            import pytorch_tokenizers.pytorch_tokenizers_cpp  # noqa: F401
            import torchao  # noqa: F401
            from executorch.runtime import Runtime

            from exporters.executorch_pte import RECIPES

            Runtime.get()
            dists = ("executorch", "torchao", "pytorch-tokenizers", "torch")
            return {"versions": {d: version(d) for d in dists}, "quants": list(RECIPES)}, b""
        if op == "export":
            from exporters.executorch_pte import build_pte

            report = build_pte(Path(req["model_dir"]), Path(req["out_file"]), str(req["quant"]),
                               max_seq_len=int(req["max_seq_len"]), threads=req.get("threads"))  # fmt: skip
            return report, b""
        if op == "open":
            from executorch.runtime import Runtime

            Runtime.get()  # the runtime imported and started: the baseline is before the model only
            self.baseline_mb = _rss_mb("VmRSS")
            self.program = PteProgram(Path(req["pte"]), int(req["threads"]))
            if req.get("tokenizer"):
                self.tokenizer = RunnerTokenizer(Path(req["tokenizer"]))
            p = self.program
            return {"max_seq_len": p.max_seq_len, "eos_ids": p.eos_ids}, b""
        if op == "logits":
            out = self._program().forward([int(i) for i in req["ids"]], int(req.get("pos", 0))).contiguous()
            return {"shape": list(out.shape), "dtype": "float32"}, out.numpy().tobytes()
        if op == "nll":
            import torch

            ids = [int(i) for i in req["ids"]]
            logp = torch.log_softmax(self._program().forward(ids, 0)[:-1].double(), dim=-1)
            nll = -logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].mean()
            return float(nll), b""
        if op == "greedy":
            tokens: list[int] = []
            times: list[float] = []
            t0 = time.perf_counter()
            for tok in self._program().greedy([int(i) for i in req["ids"]], int(req["n"]),
                                              stop_at_eos=bool(req.get("stop_at_eos", True))):  # fmt: skip
                times.append(time.perf_counter() - t0)
                tokens.append(tok)
            return {"tokens": tokens, "times": times}, b""
        if op == "encode_file":  # a tokenizer.json checked without a program
            return RunnerTokenizer(Path(req["tokenizer"])).encode(str(req["text"])), b""
        if op == "encode":
            return self._tokenizer().encode(str(req["text"])), b""
        if op == "decode":
            return self._tokenizer().decode([int(i) for i in req["ids"]]), b""
        if op == "generate":
            return self._generate(
                str(req["prompt"]), int(req["max_new_tokens"]), bool(req.get("stop_at_answer"))
            ), b""
        if op == "rss":
            return {"baseline_mb": self.baseline_mb, "peak_mb": _rss_mb("VmHWM")}, b""
        raise ValueError(f"unknown op {op!r}")

    def _generate(self, prompt: str, max_new_tokens: int, stop_at_answer: bool) -> str:
        """Greedy text until EOS or `max_new_tokens`; with `stop_at_answer`, cut where the answer is complete
        (the rule every student decoder follows)."""
        from edge_distill.stopping import AnswerStop, cut_answer

        tok = self._tokenizer()
        rule = AnswerStop(prompt) if stop_at_answer else None
        out: list[int] = []
        for t in self._program().greedy(tok.encode(prompt), max_new_tokens, stop_at_eos=True):
            out.append(t)
            if rule is not None and rule(tok.decode(out)) is not None:
                break
        text = tok.decode(out)
        return cut_answer(text, prompt) if stop_at_answer else text


def serve(stdin: Any, proto: Any) -> None:
    worker = Worker()
    while True:
        line = stdin.readline(MAX_REQUEST_BYTES + 1)
        if not line:
            return
        blob = b""
        try:
            if len(line) > MAX_REQUEST_BYTES:
                while line and not line.endswith(b"\n"):  # skip the rest: the next line is the next request
                    line = stdin.readline(1 << 20)
                raise ValueError(f"request over {MAX_REQUEST_BYTES} bytes")
            result, blob = worker.handle(json.loads(line))
            header: dict[str, Any] = {"ok": True, "result": result, "nbytes": len(blob)}
        except Exception as e:  # every failure goes back to the client as one message; the worker lives on
            header = {"ok": False, "error": f"{type(e).__name__}: {str(e).strip()[:4000]}"}
            blob = b""
        proto.write(json.dumps(header).encode("utf-8") + b"\n")
        if blob:
            proto.write(blob)
        proto.flush()


def main() -> None:
    proto = os.fdopen(os.dup(1), "wb")  # the protocol keeps the real stdout ...
    os.dup2(2, 1)  # ... and anything printed (C++ logs included) goes to stderr
    sys.stdout = sys.stderr
    serve(sys.stdin.buffer, proto)


if __name__ == "__main__":
    main()
