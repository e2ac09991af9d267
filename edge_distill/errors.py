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
