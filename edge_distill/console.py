"""The terminal, in one place: log lines that never print into progress bars, progress bars for long
loops, and third-party warnings that are noise filtered out.

- Logging: the root handler writes through `tqdm.write`, so a log line appears above a running bar,
  never inside it, and through `errors.printable`, so no control character in a message (model text,
  a server's body) reaches the terminal. Python warnings are routed into logging (`py.warnings`), and libraries that keep
  their own handler (transformers) are routed through the same root handler.
- Noise: `NOISY` lists the third-party messages that tell a user nothing they can act on (deprecations
  inside transformers/peft/torch that our code does not trigger directly). Everything else still shows.
- `progress(...)`: `tqdm` with the project's defaults; off when stderr is not a terminal unless asked.
Torch-free: nothing here imports transformers or torch.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

from edge_distill.errors import printable

__all__ = ["NOISY", "NOISY_LOGGERS", "progress", "setup_logging"]

T = TypeVar("T")

# (warning category, or None for a log record; the library's logger/module prefix; message regex)
NOISY: tuple[tuple[type[Warning] | None, str, str], ...] = (
    # peft/Trainer ask transformers a deprecated question on every model load
    (FutureWarning, "transformers", r"`is_gradient_checkpointing` is deprecated"),
    # generate() passes past_key_values itself; the rename is transformers' business
    (FutureWarning, "torch", r"`past_key_values` is deprecated"),
    (FutureWarning, "transformers", r"`past_key_values` is deprecated"),
    (None, "transformers", r"`past_key_values`/`cache_params` are deprecated"),
    (UserWarning, "torch", r"TypedStorage is deprecated"),
    (None, "transformers", r"Setting `pad_token_id` to `eos_token_id`"),
)
# loggers whose INFO chatter is not ours to show
NOISY_LOGGERS = ("httpx", "httpcore", "urllib3", "filelock", "huggingface_hub")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_ROUTED = ("transformers",)  # libraries with their own stderr handler and propagate=False


class _TqdmHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stderr handler that prints through tqdm, so active bars are cleared and redrawn around it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:  # sys.stderr now, not at setup: it may have been replaced since (pytest, notebooks)
            tqdm.write(printable(self.format(record)), file=sys.stderr)  # model/server text in messages
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


class _NoiseFilter(logging.Filter):
    """Drops records that match NOISY. On a library's own handler (`reroute`), re-emits the rest
    through the root handlers (tqdm-safe, our format) instead of letting that handler print."""

    def __init__(self, reroute: bool, library: str | None = None) -> None:
        super().__init__()
        self.reroute = reroute
        self.library = library  # the library logger whose own handler this filter sits on

    def filter(self, record: logging.LogRecord) -> bool:
        if is_noise(record.name, record.getMessage()):
            return False
        if self.reroute and self.library and logging.getLogger(self.library).propagate:
            return (
                False  # the record reaches the root handlers by propagation: re-emitting would print it twice
            )
        if self.reroute and not getattr(record, "_rerouted", False):
            record._rerouted = True  # a root handler that is also the library's must not loop
            for handler in logging.getLogger().handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)
            return False
        return True


def _route_library(name: str) -> None:
    """transformers adds its own stderr handler (propagate=False) when first imported, which prints into
    progress bars and past any logger filter (child loggers' records skip it). The library's logger
    object exists before the import, so every handler the library adds to it gets the rerouting filter."""
    lib = logging.getLogger(name)
    if getattr(lib, "_edge_distill_routed", False):
        return
    add = lib.addHandler

    def add_handler(handler: logging.Handler) -> None:
        handler.addFilter(_NoiseFilter(reroute=True, library=name))
        add(handler)

    for handler in lib.handlers:  # already imported
        handler.addFilter(_NoiseFilter(reroute=True, library=name))
    lib.addHandler = add_handler  # type: ignore[method-assign]
    lib._edge_distill_routed = True  # type: ignore[attr-defined]


def is_noise(source: str, message: str) -> bool:
    """Whether a log record from logger `source` is on the NOISY list (warnings are filtered by
    `warnings.filterwarnings` before they become records)."""
    return any(source.startswith(prefix) and re.search(pattern, message) for _, prefix, pattern in NOISY)


def filter_noise() -> None:
    """Install the NOISY filters: Python warnings by message, library log records by logger."""
    for cat, _, pattern in NOISY:
        if cat is not None:
            warnings.filterwarnings("ignore", message=f".*{pattern}", category=cat)
    root_filter = _NoiseFilter(reroute=False)
    for handler in logging.getLogger().handlers:
        if root_filter not in handler.filters:
            handler.addFilter(root_filter)
    for name in _ROUTED:
        _route_library(name)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def setup_logging(level: int = logging.INFO) -> None:
    """The CLI's logging: one tqdm-safe stderr handler on the root logger, warnings routed into it, noise off.

    Like `logging.basicConfig`, it leaves a root logger that already has handlers alone (pytest, an
    application embedding the CLI): their owner decides where log lines go."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = _TqdmHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    filter_noise()


def progress(iterable: Iterable[T] | None = None, *, desc: str, unit: str = "it", total: int | None = None,
             disable: bool | None = False, leave: bool = False, **kw: Any) -> Any:  # fmt: skip
    """A tqdm bar with the project's defaults (disappears when done; the stage line stays)."""
    return tqdm(
        iterable,
        desc=printable(desc, 80),
        unit=unit,
        total=total,
        disable=disable,
        leave=leave,
        dynamic_ncols=True,
        **kw,
    )
