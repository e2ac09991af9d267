"""Training objectives: builders that turn samples into weighted `Example`s, and the shared loss.

`examples` (Example + collator), `losses` (weighted_ce), `sft`, `cascod`, `edit`; `build` holds the one
table of `Objective` records (`objective(name)`).
Submodules are imported explicitly by their callers, so importing this package stays cheap.
"""
