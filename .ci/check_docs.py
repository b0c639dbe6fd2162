"""Checks the documentation against the tree: README length, links, and the module map.

    python .ci/check_docs.py

- README.md is under 250 lines and links to every page under docs/;
- every relative link in README.md and docs/*.md names a file that exists and, with a
  ``#fragment``, a heading of that file (GitHub's heading anchors);
- every non-empty module under lib/interestlake/ is named, in backticks and relative to
  lib/interestlake/ (``lake/tables.py``), in docs/architecture.md.

Prints one line per problem and exits 1 when there is any. Standard library only.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README_MAX_LINES = 250
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def prose_lines(text: str) -> list[str]:
    """The lines of a Markdown text outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings (a repeated heading gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    result = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = re.match(r"#{1,6} (.+)", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def link_problems(page: Path) -> list[str]:
    problems = []
    for line in prose_lines(page.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked here
            file_part, _, fragment = target.partition("#")
            linked = (page.parent / file_part).resolve() if file_part else page
            where = f"{page.relative_to(REPO)}: link {target}"
            if not linked.exists():
                problems.append(f"{where}: no such file")
            elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                problems.append(f"{where}: no heading with that anchor in {linked.relative_to(REPO)}")
    return problems


def main() -> int:
    readme = REPO / "README.md"
    pages = sorted((REPO / "docs").glob("*.md"))
    problems = []
    length = len(readme.read_text(encoding="utf-8").splitlines())
    if length >= README_MAX_LINES:
        problems.append(f"README.md: {length} lines, the limit is under {README_MAX_LINES}")
    readme_links = {
        (REPO / target.partition("#")[0]).resolve()
        for line in prose_lines(readme.read_text(encoding="utf-8"))
        for target in LINK.findall(line)
    }
    problems += [f"README.md: no link to {page.relative_to(REPO)}" for page in pages if page not in readme_links]
    for page in [readme, *pages]:
        problems += link_problems(page)
    architecture = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    package = REPO / "lib" / "interestlake"
    for module in sorted(package.rglob("*.py")):
        name = module.relative_to(package).as_posix()
        if module.name == "__init__.py" and not module.read_text(encoding="utf-8").strip():
            continue
        if f"`{name}`" not in architecture:
            problems.append(f"docs/architecture.md: module {name} is not named")
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
