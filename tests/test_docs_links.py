"""The README is a front door and docs/ the rooms behind it: every relative link in them must
lead somewhere in the repository, so a newcomer never meets a dead end (or a page outside the
repository that a fresh clone does not have), and the README stays short enough to read in one
sitting. No network: public URLs are not followed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 250

# [text](target) and ![alt](target); the target may carry a title after a space.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+\1")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = ("http://", "https://", "mailto:")


def documents() -> list[Path]:
    """The pages a reader follows links through."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """Numbered lines outside code blocks (fenced, or indented after a blank line): a link or a
    heading in code is only text."""
    fence: str | None = None
    in_code = False
    previous_blank = True
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.lstrip()
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
            continue
        if stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
            continue
        if not stripped:
            previous_blank = True
            continue
        indented = line.startswith(("    ", "\t"))
        in_code = indented and (in_code or previous_blank)
        previous_blank = False
        if not in_code:
            yield number, line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text without markup, lower case, punctuation other
    than '-' and '_' dropped, each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a Markdown file, repeated headings numbered as GitHub does."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> Iterator[tuple[int, str]]:
    """Each link target in a document's prose, with its line number."""
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for match in LINK.finditer(INLINE_CODE.sub("", line)):
            yield number, match.group(1)


def broken(document: Path, target: str) -> str | None:
    """Why a link from a document does not resolve inside the repository, or None when it does."""
    if target.startswith(EXTERNAL):
        return None
    if re.match(r"[a-z][a-z0-9+.-]*:", target):
        return "a scheme other than http(s) or mailto"
    file_part, _, anchor = target.partition("#")
    destination = (document.parent / file_part).resolve() if file_part else document
    if not destination.is_relative_to(ROOT):
        return "points outside the repository"
    if not destination.exists():
        return "no such file"
    if anchor:
        if destination.is_dir() or destination.suffix != ".md":
            return "an anchor into something that is not a Markdown page"
        if anchor not in anchors(destination):
            return f"no heading with the anchor #{anchor}"
    return None


@pytest.mark.parametrize("document", documents(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(document: Path) -> None:
    problems = [f"{document.relative_to(ROOT)}:{number}: ({target}) {reason}"
                for number, target in links(document)
                if (reason := broken(document, target)) is not None]
    assert not problems, "\n".join(problems)


def test_the_documents_have_links_to_check() -> None:
    """A parser that found nothing would pass the test above for the wrong reason."""
    readme = [target for _, target in links(ROOT / "README.md")]
    assert "docs/protocol.md" in readme and "docs/actors.md" in readme
    assert any("#" in target for target in readme)


def test_the_readme_is_a_front_door_not_the_manual() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


@pytest.mark.parametrize(("heading", "anchor"), [
    ("Part 3 — what clients rely on", "part-3--what-clients-rely-on"),
    ("`/api/actors`", "apiactors"),
    ("Deploy (Heroku-style)", "deploy-heroku-style"),
    ("The original's command line", "the-originals-command-line"),
    ("Resumes (bench/resume_cost.py)", "resumes-benchresume_costpy"),
    ("The chat at `/`", "the-chat-at-"),
])
def test_anchors_follow_githubs_rules(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


# A path into the repository named in prose, a comment or a docstring: `app/websocket/route.py`,
# `actors/runtime/`. Code moves; a sentence naming where it was sends a student nowhere.
NAMED_PATH = re.compile(r"(?<![\w./-])((?:actors|app|tests|bench|docs)/[\w/.-]*\w/?)")
SOURCES = ("*.py", "*.md", "*.lua", "*.js", "*.html", "*.toml", "Procfile", ".ci/run")


def named_paths() -> Iterator[tuple[Path, str]]:
    for pattern in SOURCES:
        for path in ROOT.glob(pattern) if "/" in pattern else ROOT.rglob(pattern):
            relative = path.relative_to(ROOT).as_posix()
            if relative.startswith(("bench/results/", ".git/")) or "/." in relative:
                continue
            for match in NAMED_PATH.finditer(path.read_text(errors="replace")):
                yield path, match.group(1)


def test_every_path_named_in_code_or_docs_exists() -> None:
    missing = sorted({f"{path.relative_to(ROOT)}: {named}" for path, named in named_paths()
                      if not (ROOT / named).exists() and not (ROOT / (named + ".py")).exists()
                      and not any((ROOT / named).parent.glob((ROOT / named).name + "*"))})
    assert not missing, "paths that do not exist:\n" + "\n".join(missing)
