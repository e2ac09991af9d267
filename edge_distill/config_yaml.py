"""YAML as edge-distill reads it (no anchors or aliases), and pydantic validation errors as one line per key.

Shared by the run config (`config`), a run directory's saved config (`rundir`) and device profiles
(`device_profiles.loader`).
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import ValidationError

from edge_distill.errors import CLIP_CHARS, ConfigError, clip

# Validation errors listed before "... and N more": a wrong-typed list of a million items is one problem.
_MAX_ERROR_LINES = 20


class AliasRefused(yaml.composer.ComposerError):
    pass


class NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases.

    `*alias` lets a 1 kB file expand to gigabytes ("billion laughs": >120 s and 3.1 GB on main), and a
    config never needs one, so the first anchor or alias is an error with its line and column.
    """

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            what = "alias *" if isinstance(event, yaml.AliasEvent) else "anchor &"
            raise AliasRefused(
                None, None, f"YAML {what}{event.anchor} is not allowed: write the value out", event.start_mark
            )
        return super().compose_node(parent, index)


def load_yaml_text(text: str, origin: str, error: type[ConfigError] = ConfigError) -> Any:
    """Parse YAML without anchors/aliases; any failure is one `error` naming `origin`, line and column."""
    try:
        return yaml.load(text, Loader=NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = str(getattr(e, "problem", None) or e)[:CLIP_CHARS]
        raise error(f"{origin}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise error(f"{origin}: not valid YAML: nested too deeply") from None


def format_validation_error(err: ValidationError, header: str, unknown_hint: str) -> str:
    """One line per bad key: the dotted key, what is wrong, the value given (pydantic lists allowed values).

    Keys and values are echoed through `clip`, so a huge value gives a short message (52 MB on main).
    """
    lines = [header]
    errors = err.errors()
    for e in errors[:_MAX_ERROR_LINES]:
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        key = key if len(key) <= CLIP_CHARS else clip(key)
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key ({unknown_hint})")
        else:
            value = e.get("input")
            shown = "" if isinstance(value, dict) else f" (got {clip(value)})"
            lines.append(f"  {key}: {str(e['msg'])[:CLIP_CHARS]}{shown}")
    if len(errors) > _MAX_ERROR_LINES:
        lines.append(f"  ... and {len(errors) - _MAX_ERROR_LINES} more")
    return "\n".join(lines)
