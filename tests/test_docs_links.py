"""Every relative link in README.md and docs/*.md points at a file of the repository, and every `#anchor`
at a heading of its target (GitHub's slug rule), so moving a section cannot leave a dead link behind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, blanks to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    out: set[str] = set()
    for line in _FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        if m := re.match(r"#{1,6} (.+)", line):
            base = slug(m.group(1))
            name, k = base, 0
            while name in out:  # GitHub numbers repeated headings: x, x-1, x-2
                k += 1
                name = f"{base}-{k}"
            out.add(name)
    return out


def links(page: Path) -> list[str]:
    return _LINK.findall(_FENCE.sub("", page.read_text(encoding="utf-8")))


def test_slug_follows_github() -> None:
    assert slug("Does the student learn? The learning curve") == "does-the-student-learn-the-learning-curve"
    assert slug("Logit distillation (`train.kd`)") == "logit-distillation-trainkd"
    assert (
        slug("Prompting an exported model (chat apps, Ollama)")
        == "prompting-an-exported-model-chat-apps-ollama"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    bad = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    assert not bad, f"{page.relative_to(ROOT)}:\n" + "\n".join(bad)


def test_readme_opens_with_the_two_commands() -> None:
    """The house rule: the first thing a newcomer reads is how to run the quickstart and the tests."""
    lines = [x for x in (ROOT / "README.md").read_text(encoding="utf-8").splitlines() if x.strip()]
    assert lines[0].startswith("# ") and lines[1] == "```bash", lines[:2]
    block = lines[2 : lines.index("```", 2)]
    assert [x.split("#")[0].strip() for x in block] == ["make quickstart", "make test"]
