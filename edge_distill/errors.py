"""Errors the library raises on purpose. The CLI turns these into one-line messages and exit codes."""


class EdgeDistillError(Exception):
    """Base class: a problem the user can fix (bad config, bad input file, missing model...)."""


class ConfigError(EdgeDistillError):
    """A config key or value is invalid. The message names the key, the value and what is allowed."""


class DataError(EdgeDistillError):
    """An input data file is malformed. The message names the file and line."""


class ModelError(EdgeDistillError):
    """A model path/id cannot be resolved or loaded."""


class TeacherError(EdgeDistillError):
    """The teacher failed entirely (unreachable, auth, misconfigured)."""


class StageError(EdgeDistillError):
    """A pipeline stage cannot run (missing inputs from an earlier stage, ...)."""


class StorageError(EdgeDistillError):
    """An output cannot be written (disk full, read-only, not a directory). The message names the path."""


# Text from outside (HTTP error bodies, a device's output, model text, package files) reaches the terminal
# only through `printable`: C0/C1 control characters (ESC starts the sequences that retitle a window, hide
# or rewrite lines, or worse), DEL and the bidirectional overrides that reorder what is shown become "?".
_UNPRINTABLE = {c: "?" for c in [*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)]}
_UNPRINTABLE.update(
    {c: "?" for c in [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]}
)


def printable(text: object, limit: int | None = None, *, keep_end: bool = False) -> str:
    """`text` safe to show on a terminal: tabs and newlines kept (CRLF as a newline), every other control
    character replaced by "?"; cut to about `limit` characters (the end kept with `keep_end`)."""
    s = str(text).replace("\r\n", "\n").translate(_UNPRINTABLE)
    if limit is not None and len(s) > limit:
        s = "..." + s[-limit:] if keep_end else s[:limit] + "..."
    return s


# Values echoed back in error messages are user input of any size: a 50 MB string must not become a
# 50 MB message (issue 10), so every echo goes through `clip`.
CLIP_CHARS = 200


def clip(value: object, limit: int = CLIP_CHARS) -> str:
    """`repr(value)` cut to about `limit` characters, bounded in time and memory for any nesting or size."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring = r.maxother = r.maxlong = limit
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = r.maxfrozenset = 10
    r.maxlevel = 3
    try:
        text = r.repr(value)
    except ValueError:  # an int beyond Python's str-conversion digit limit
        text = f"<{type(value).__name__} too large to show>"
    return text if len(text) <= limit else f"{text[: limit - 15]}...({len(text)} chars)"
