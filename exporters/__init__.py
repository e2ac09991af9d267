"""Student -> GGUF (gguf + llama.cpp quantizer) and ONNX (onnxruntime-genai builder) packages, with parity checks.

Entry points: `export_model(...)` and `verify(package_dir)`. Heavy dependencies (torch, transformers,
gguf, llama_cpp, onnxruntime_genai) are imported inside the functions that need them.
"""

from exporters.api import export_model, export_targets, resolve_source, run_metadata
from exporters.errors import ExportError, ParityError
from exporters.formats import FORMATS, Format, get_format
from exporters.verify import VerifyResult, verify

__all__ = [
    "FORMATS",
    "ExportError",
    "Format",
    "ParityError",
    "VerifyResult",
    "export_model",
    "export_targets",
    "get_format",
    "resolve_source",
    "run_metadata",
    "verify",
]
