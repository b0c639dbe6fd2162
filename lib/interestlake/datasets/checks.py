"""``interestlake validate``: what ingest would accept and reject, without writing anything.

The same reader and rules as ingest (``landing.check_file``), run in this
process without Spark or a lake: counts per reason and the first examples of
each. Free texts are masked in the examples, so the report can be pasted into a
ticket without copying what users wrote.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interestlake import constants as C
from interestlake.datasets import validation as V
from interestlake.datasets.landing import check_file, list_landing_files, stat_file

_KEYS = {C.EVENTS: C.COL_EVENT_ID, C.REVIEWS: C.COL_REVIEW_ID}
_TEXT_FIELDS = (C.COL_TEXT,)
_TEXT_IN_BROKEN_JSON = re.compile(r'("(?:' + "|".join(_TEXT_FIELDS) + r')"\s*:\s*")(?:[^"\\]|\\.)*')
DUPLICATE = "duplicate"
ACCEPTED = "accepted"


@dataclass
class LandingCheck:
    """Counts per kind and reason (``accepted``, ``duplicate`` or a reason code) and examples per reason."""

    files: Counter = field(default_factory=Counter)
    counts: dict[str, Counter] = field(default_factory=dict)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    truncated: Counter = field(default_factory=Counter)
    # Per kind: rows per note (``CheckedRow.notes``: unknown field names, files decoded from another encoding).
    notes: dict[str, Counter] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "files": dict(self.files),
            "counts": {kind: dict(counts) for kind, counts in self.counts.items()},
            "truncated_texts": dict(self.truncated),
            "notes": {kind: dict(notes) for kind, notes in self.notes.items()},
            "examples": self.examples,
        }

    def summary(self) -> str:
        lines = []
        for kind in C.LANDING_KINDS:
            if kind not in self.counts:
                continue
            counts = self.counts[kind]
            parts = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
            lines.append(f"{kind}: {self.files[kind]} file(s); {parts}")
            if self.truncated[kind]:
                lines.append(f"  {self.truncated[kind]} row(s) with a text cut to {V.MAX_TEXT_CHARS} characters")
            if self.notes.get(kind):
                lines.append("  rows noted: " + ", ".join(f"{note} {n}" for note, n in sorted(self.notes[kind].items())))
        for reason, examples in sorted(self.examples.items()):
            lines.append(f"\n{reason}:")
            for example in examples:
                lines.append(f"  {example['source']}:{example['row_no']}  {example['detail']}")
                if example["raw"]:
                    lines.append(f"    {example['raw']}")
        return "\n".join(lines) or "no landing files found"


def check_landing(path: str, examples_per_reason: int = 3) -> LandingCheck:
    """Validates the landing files under ``path`` as ingest would; writes nothing.

    Args:
        path: A landing root (with ``events/``, ``reviews/``, ``items/``), one kind's
            folder, or one file inside a kind's folder.
        examples_per_reason: How many rejected rows to keep per reason.

    Raises:
        ValueError: When ``path`` does not exist or its kind cannot be told from it.
    """
    target = Path(path).expanduser().resolve()
    if not target.exists():
        raise ValueError(f"{path}: no such file or folder")
    check = LandingCheck()
    for kind, files in _files_by_kind(target).items():
        counts = check.counts.setdefault(kind, Counter())
        seen: set[str] = set()
        for found in files:
            check.files[kind] += 1
            _, rows = check_file(kind, found.path, found.mtime)
            for row in rows:
                check.notes.setdefault(kind, Counter()).update(row.notes)
                if isinstance(row.result, V.Rejection):
                    counts[row.result.reason] += 1
                    kept = check.examples.setdefault(row.result.reason, [])
                    if len(kept) < examples_per_reason:
                        kept.append({"kind": kind, "source": found.path, "row_no": row.row_no,
                                     "detail": row.result.detail, "raw": mask_texts(row.raw)})
                    continue
                key = _KEYS.get(kind)
                if key is not None:
                    if row.result[key] in seen:
                        counts[DUPLICATE] += 1
                        continue
                    seen.add(row.result[key])
                counts[ACCEPTED] += 1
                check.truncated[kind] += bool(row.result.get(C.COL_TRUNCATED))
    return check


def _files_by_kind(target: Path) -> dict[str, list]:
    if target.is_file():
        kind = next((part for part in reversed(target.parts[:-1]) if part in C.LANDING_KINDS), None)
        if kind is None:
            raise ValueError(f"{target}: cannot tell its kind; put it under a folder named {'/'.join(C.LANDING_KINDS)}")
        return {kind: [stat_file(str(target))]}
    if target.name in C.LANDING_KINDS:
        return {target.name: list_landing_files(str(target.parent), target.name)}
    found = {kind: list_landing_files(str(target), kind) for kind in C.LANDING_KINDS}
    return {kind: files for kind, files in found.items() if files}


def mask_texts(raw: str | None, keep: int = 200) -> str | None:
    """A raw row for display: free-text fields replaced by their length, the rest cut to ``keep`` characters."""
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        # A broken row: mask what follows a text field's name up to the next quote.
        raw = _TEXT_IN_BROKEN_JSON.sub(r'\1<masked>', raw)
        return raw[:keep] + ("..." if len(raw) > keep else "")
    if isinstance(record, dict):
        for name in _TEXT_FIELDS:
            if isinstance(record.get(name), str):
                record[name] = f"<{len(record[name])} characters>"
        raw = json.dumps(record, ensure_ascii=False)
    return raw[:keep] + ("..." if len(raw) > keep else "")
