"""No block of more than 12 lines in ``lib/`` is repeated elsewhere in ``lib/`` (issue 25).

Every ``.py`` file under ``lib/`` is read with :mod:`tokenize` and turned into its logical
source lines (a statement spread over several physical lines is one line), each normalized
so that a copy with renamed variables reads the same: names become ``N``, strings ``S``,
numbers ``0``; keywords and operators stay; comments, blank lines and docstrings (a
statement that is only a string) are dropped.

Any window of 13 consecutive normalized lines found at two places is a repeated block, with
two exceptions that keep the check on duplicated logic rather than on the shapes that lists
of declarations share. Without them the real tree is flagged for lists only: the runs of
``NAME = "value"`` constants in ``constants.py``, matching each other and the reason codes of
``datasets/validation.py``; two settings classes whose ``Field()`` lines happen to have the
same shapes, or two dataclasses with the same field types in the same order, would be next.

- A window needs some structure: at least ``MIN_DISTINCT`` (4) different normalized lines
  that are not declarations. Declarations are the simple statements directly in a module or
  class body (constants, imports, fields, ``__all__``); lists are made of them. Lines inside
  functions and the ``def``/``class`` lines themselves count: 13 lines of logic
  (assignments, a loop, a condition, calls, a return) show far more than 4 shapes.
- A window that is a pattern of at most 6 lines repeated (period <= 6), and two occurrences
  that overlap, are one short piece written several times, not a 13-line block written twice.

The window stays at 13 and names stay anonymous: a larger window, or kept names, would hide
real copies. Matching windows that follow each other are reported as one block,
``file:first-last ~ file:first-last`` in physical lines.
"""

from __future__ import annotations

import ast
import io
import keyword
import tokenize
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

LIB = Path(__file__).resolve().parents[2] / "lib"

# "No block of more than 12 lines": 13 logical lines make a block.
WINDOW = 13
# Fewer distinct non-declaration lines than this in a window: a list, not logic.
MIN_DISTINCT = 4

# File pairs (paths relative to lib/) whose shared block is known and left for later, each
# with a comment naming the issue that removes it. Empty: lib/ repeats no block (issue 25).
ALLOWED: frozenset[frozenset[str]] = frozenset()

_DROPPED = {tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING, tokenize.ENDMARKER}
# Python 3.12 splits f-strings into parts (3.14 t-strings too); each is one string here, as in 3.11.
_STRING_STARTS = {getattr(tokenize, name) for name in ("FSTRING_START", "TSTRING_START") if hasattr(tokenize, name)}
_STRING_ENDS = {getattr(tokenize, name) for name in ("FSTRING_END", "TSTRING_END") if hasattr(tokenize, name)}


@dataclass(frozen=True)
class Line:
    """One normalized logical line, the physical lines it spans, and whether it is a declaration."""

    first: int
    last: int
    text: str
    declaration: bool


def normalized_lines(source: str) -> list[Line]:
    """The logical lines of a Python source, normalized as the module docstring says.

    Args:
        source: The text of a Python file.

    Returns:
        The lines in order, without comments, blank lines and docstrings.
    """
    declarations = _declaration_lines(ast.parse(source))
    lines: list[Line] = []
    words: list[str] = []
    first = 0
    string_depth = 0
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in _DROPPED:
            continue
        if string_depth:
            string_depth += (tok.type in _STRING_STARTS) - (tok.type in _STRING_ENDS)
            continue
        if tok.type == tokenize.NEWLINE:
            # A statement made only of strings is a docstring (or a bare string): no logic.
            if words and set(words) != {"S"}:
                lines.append(Line(first, tok.start[0], " ".join(words), first in declarations))
            words = []
            continue
        if not words:
            first = tok.start[0]
        if tok.type in _STRING_STARTS:
            string_depth = 1
            words.append("S")
        elif tok.type == tokenize.STRING:
            words.append("S")
        elif tok.type == tokenize.NUMBER:
            words.append("0")
        elif tok.type == tokenize.NAME:
            words.append(tok.string if keyword.iskeyword(tok.string) else "N")
        else:
            words.append(tok.string)
    return lines


def _declaration_lines(tree: ast.Module) -> set[int]:
    """First lines of the simple statements directly in the module's or a class's body."""
    bodies = [tree.body] + [node.body for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    compound = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.If, ast.For, ast.AsyncFor, ast.While,
                ast.With, ast.AsyncWith, ast.Try, ast.Match)
    return {statement.lineno for body in bodies for statement in body if not isinstance(statement, compound)}


@dataclass(frozen=True)
class Block:
    """A block of at least WINDOW normalized lines found at two places."""

    path_a: str
    first_a: int
    last_a: int
    path_b: str
    first_b: int
    last_b: int

    def __str__(self) -> str:
        return f"{self.path_a}:{self.first_a}-{self.last_a} ~ {self.path_b}:{self.first_b}-{self.last_b}"


def repeated_blocks(sources: dict[str, str]) -> list[Block]:
    """Blocks of at least WINDOW normalized lines that occur twice in ``sources``.

    Args:
        sources: File name to Python source.

    Returns:
        One Block per pair of places, merged over consecutive matching windows, sorted.
    """
    lines = {name: normalized_lines(source) for name, source in sorted(sources.items())}
    where: dict[tuple[str, ...], list[tuple[str, int]]] = defaultdict(list)
    for name, file_lines in lines.items():
        for start in range(len(file_lines) - WINDOW + 1):
            window = file_lines[start : start + WINDOW]
            texts = tuple(line.text for line in window)
            if len({line.text for line in window if not line.declaration}) >= MIN_DISTINCT and not _periodic(texts):
                where[texts].append((name, start))
    pairs = set()
    for places in where.values():
        for i, (name_a, start_a) in enumerate(places):
            for name_b, start_b in places[i + 1 :]:
                if name_a != name_b or abs(start_a - start_b) >= WINDOW:
                    pairs.add((name_a, start_a, name_b, start_b))
    blocks = []
    for name_a, start_a, name_b, start_b in sorted(pairs):
        if (name_a, start_a - 1, name_b, start_b - 1) in pairs:
            continue  # inside a block that starts earlier
        length = WINDOW
        while (name_a, start_a + length - WINDOW + 1, name_b, start_b + length - WINDOW + 1) in pairs:
            length += 1
        a, b = lines[name_a], lines[name_b]
        blocks.append(Block(name_a, a[start_a].first, a[start_a + length - 1].last,
                            name_b, b[start_b].first, b[start_b + length - 1].last))
    return blocks


def _periodic(window: tuple[str, ...]) -> bool:
    """Whether the window is a pattern of at most WINDOW // 2 lines, repeated."""
    return any(window[p:] == window[:-p] for p in range(1, WINDOW // 2 + 1))


def test_no_block_of_more_than_12_lines_is_repeated_in_lib() -> None:
    sources = {path.relative_to(LIB).as_posix(): path.read_text(encoding="utf-8") for path in sorted(LIB.rglob("*.py"))}
    assert len(sources) > 50, "lib/ not found where expected"
    found = [block for block in repeated_blocks(sources) if frozenset((block.path_a, block.path_b)) not in ALLOWED]
    assert not found, "blocks repeated in lib/ (make one piece of code serve both):\n" + "\n".join(map(str, found))


# --- the detector itself, on small sources ------------------------------------------------

# 13 logical lines (the docstring and the comment do not count).
_LOGIC = '''
def total(rows, limit):
    """Sums what fits."""
    result = 0
    seen = set()
    for row in rows:  # keep the order
        if row.key in seen:
            continue
        seen.add(row.key)
        value = row.price * row.count
        if value > limit:
            break
        result += value
    ordered = sorted(seen, reverse=True)
    return result, ordered
'''


def test_a_copy_with_renamed_variables_is_found() -> None:
    renamed = _LOGIC.replace("total", "amount").replace("rows", "items").replace("result", "acc").replace("seen", "s")
    renamed = renamed.replace("value", "v").replace("limit", "cap").replace("row.price", "row.cost")
    renamed = renamed.replace('"""Sums what fits."""', "# no docstring")
    (block,) = repeated_blocks({"a.py": _LOGIC, "b.py": "import os\n\n" + renamed})
    assert str(block) == "a.py:2-15 ~ b.py:4-17"


def test_a_copy_in_the_same_file_is_found() -> None:
    (block,) = repeated_blocks({"a.py": _LOGIC + "\n\nx = 1\n" + _LOGIC.replace("total", "other")})
    assert str(block) == "a.py:2-15 ~ a.py:20-33"


def test_twelve_shared_lines_are_not_a_block() -> None:
    twelve = _LOGIC.replace("    return result, ordered\n", "")
    assert repeated_blocks({"a.py": _LOGIC, "b.py": twelve}) == []


def test_a_changed_operator_or_statement_breaks_the_match() -> None:
    assert repeated_blocks({"a.py": _LOGIC, "b.py": _LOGIC.replace("value > limit", "value >= limit")}) == []
    assert repeated_blocks({"a.py": _LOGIC, "b.py": _LOGIC.replace("continue", "pass")}) == []


def test_runs_of_declarations_are_not_blocks() -> None:
    constants = "\n".join(f'NAME_{i} = "value_{i}"' if i % 3 else f"LIMIT_{i} = {i}" for i in range(30))
    kinds = ("int = Field(default=1, gt=0)", "float = Field(default=0.5, ge=0, lt=1)", "str | None = None",
             'Literal["a", "b"] = "a"', "list[str] = Field(default_factory=list)", "bool = False")
    fields = "class P:\n" + "\n".join(f"    f{i}: {kinds[i * i % 7 % 6]}" for i in range(30))
    entries = "T = {\n" + "\n".join(f'    "k{i}": {i},' for i in range(30)) + "\n}\n" + constants
    sources = {"a.py": constants, "b.py": constants, "c.py": fields, "d.py": fields, "e.py": entries}
    assert repeated_blocks(sources) == []


def test_a_short_piece_written_several_times_is_not_a_block() -> None:
    # A report's sections: a 5-line piece 10 times (periodic windows).
    sections = "".join(f"    a{i} = b.get({i})\n    if a{i}:\n        c.append(a{i})\n    else:\n        d += 1\n"
                       for i in range(10))
    # An 8-line piece twice: its 13-line windows overlap each other.
    piece = "".join(f"    x = y.{name}(z)\n    if x:\n        w.append(x)\n" for name in ("f", "g")) + "    e += 1\n    k()\n"
    source = f"def report(b, c, d):\n{sections}\n\ndef twice(y, z, w, e, k):\n{piece}{piece}"
    assert repeated_blocks({"a.py": source}) == []
    # Written once more elsewhere, the 16 lines of twice() are a block.
    assert repeated_blocks({"a.py": source, "b.py": f"def again(y, z, w, e, k):\n{piece}{piece}"})
