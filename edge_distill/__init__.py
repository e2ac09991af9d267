"""edge-distill: distill math reasoning into a small student and ship it to edge devices.

Importing this package is cheap and torch-free; heavy modules (training, eval, teachers that
need torch or llama.cpp) import their dependencies lazily so the device install works.
"""

from edge_distill.errors import EdgeDistillError

__all__ = ["EdgeDistillError"]
__version__ = "0.1.0"
