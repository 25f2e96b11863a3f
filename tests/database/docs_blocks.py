"""Read the README and docs pages: fenced code blocks, shell command lines, links and anchors."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from worker.development.live import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"


def doc_pages() -> list[Path]:
    """Every page whose code blocks and links are checked."""
    return [
        README,
        *sorted((PROJECT_ROOT / "docs").glob("*.md")),
        PROJECT_ROOT / "benchmarks" / "README.md",
    ]


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(PROJECT_ROOT)}:{line}"


@dataclass(frozen=True)
class Block:
    """A fenced code block: its page, the line of its opening fence, its language and text."""

    path: Path
    line: int
    lang: str
    code: str

    @property
    def id(self) -> str:
        return where(self.path, self.line)


_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")


def blocks(path: Path) -> list[Block]:
    found: list[Block] = []
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence, lang = opening.groups()
        body: list[str] = []
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            body.append(lines[end].removeprefix(indent))
            end += 1
        found.append(Block(path, index + 1, lang, "\n".join(body) + "\n"))
        index = end + 1
    return found


def prose(path: Path) -> Iterator[tuple[int, str]]:
    """The page's lines outside fenced blocks, with their numbers."""
    fence: str | None = None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        opening = _FENCE.match(line)
        if fence is None and opening is not None:
            fence = opening.group(2)
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is None:
            yield number, line


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def links(path: Path) -> list[tuple[int, str]]:
    """Every Markdown link target in the page's prose (not in code), with its line."""
    lines = [""] * len(path.read_text().splitlines())
    for number, line in prose(path):
        lines[number - 1] = re.sub(r"`[^`]*`", "``", line)
    text = "\n".join(lines)  # a link's text may wrap onto the next line
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in _LINK.finditer(text)]


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the page's headings (`## Least privilege` -> least-privilege)."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    for _, line in prose(path):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading is None:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
        repeat = counts.get(slug, 0)
        found.add(slug if repeat == 0 else f"{slug}-{repeat}")
        counts[slug] = repeat + 1
    return found


@dataclass(frozen=True)
class Command:
    """One shell command of a block: `VAR=value` prefixes apart, comments and prompts dropped."""

    block: Block
    line: int
    assignments: tuple[tuple[str, str], ...]
    argv: tuple[str, ...]
    cwd: Path  # after the `cd` commands before it in the same block

    @property
    def id(self) -> str:
        return f"{where(self.block.path, self.line)} {' '.join(self.argv)}"


def _logical_lines(block: Block) -> Iterator[tuple[int, str]]:
    """Lines with backslash continuations joined; in a console block, only `$ ` prompts."""
    pending, start = "", 0
    for offset, raw in enumerate(block.code.splitlines(), start=1):
        line = raw
        if not pending:
            start = block.line + offset
            if block.lang == "console":
                if not line.startswith("$ "):
                    continue  # output
                line = line[2:]
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield start, pending + line
        pending = ""
    if pending:
        yield start, pending


_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)


def commands(block: Block) -> list[Command]:
    """The commands of a `sh` or `console` block, split at `&&` and `;`."""
    found: list[Command] = []
    cwd = PROJECT_ROOT
    for line, text in _logical_lines(block):
        lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        part: list[str] = []
        for token in [*lexer, ";"]:
            if token not in {";", "&&", "||"}:
                part.append(token)
                continue
            if not part:
                continue
            assignments: list[tuple[str, str]] = []
            while part and (match := _ASSIGNMENT.match(part[0])):
                assignments.append((match.group(1), match.group(2)))
                part.pop(0)
            command = Command(block, line, tuple(assignments), tuple(part), cwd)
            found.append(command)
            if part[:1] == ["cd"] and len(part) == 2:
                cwd = (cwd / part[1]).resolve()
            part = []
    return found


def settings_table() -> list[tuple[list[str], str, int]]:
    """The README's configuration table: (variables of a row, its default cell, line)."""
    rows: list[tuple[list[str], str, int]] = []
    section = False
    for number, line in enumerate(README.read_text().splitlines(), start=1):
        if line.startswith("## "):
            section = line.strip() == "## Configuration"
            continue
        if not section or not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        names = re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0])
        if names:
            rows.append((names, cells[1], number))
    return rows
