"""Every message the README's Troubleshooting table quotes is one bakup can print.

A message is quoted in backticks in the table's first column: the text bakup prints, with
``...`` where it puts a value (a host, a path, a count) and perhaps shortened at either end.
It is found in a string of bakup's own code (``bakup/``, ``worker/``, ``metrics/``,
``notifications/``), where an f-string's ``{value}`` or a log call's ``%s`` stands for any text.
PostgreSQL's and pg_dump's own messages count when bakup's code names them (the patterns it
recognises to add a hint), since that is where bakup says what to do about them.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCE_FOLDERS = ("bakup", "worker", "metrics", "notifications")
ANY = None  # a token that stands for any text
Pattern = tuple[str | None, ...]  # characters, and ANY


def troubleshooting_messages() -> list[str]:
    """The backtick-quoted messages in the first column of the Troubleshooting table."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Troubleshooting\n", 1)[1].split("\n## ", 1)[0]
    messages = []
    for line in section.splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        first_column = line.strip("|").split(" | ", 1)[0]
        messages += re.findall(r"`([^`]+)`", first_column)
        # Text in double quotes outside the backticks is a quoted message too.
        messages += re.findall(r'"([^"]*[A-Za-z][^"]*)"', re.sub(r"`[^`]*`", "", first_column))
    return messages


def _pattern_from_text(text: str, placeholder: str) -> Pattern:
    """Characters of ``text``, with every match of the regex ``placeholder`` as ANY."""
    tokens: list[str | None] = []
    position = 0
    for match in re.finditer(placeholder, text):
        tokens += text[position : match.start()]
        tokens.append(ANY)
        position = match.end()
    tokens += text[position:]
    return tuple(tokens)


# printf-style conversions (log calls), str.format fields, and "\0" (see _regex_readings).
_CONSTANT_PLACEHOLDER = r"%[-+ #0]*\d*(?:\.\d+)?[sdrfix]|\{[A-Za-z_0-9.!:]*\}|\0"


def _regex_readings(text: str) -> list[str]:
    """What a regular expression (the hint patterns bakup matches PostgreSQL's messages with)
    stands for, roughly: one text per alternative, a character class as "\0" (any text), an
    escape as the character it escapes."""
    text = re.sub(r"\\b", "", text)
    text = re.sub(r"\\s[+*]?", " ", text)
    text = re.sub(r"\[[^\]]*\][*+?]?|\.[*+]", "\0", text)
    readings = [text]
    while any("(?:" in reading for reading in readings) and len(readings) < 64:
        expanded = []
        for reading in readings:
            group = re.search(r"(?<!\\)\(\?:([^()]*)\)", reading)
            if group is None:
                expanded.append(reading)
                continue
            for alternative in group.group(1).split("|"):
                expanded.append(reading[: group.start()] + alternative + reading[group.end() :])
        if expanded == readings:
            break
        readings = expanded
    return [
        re.sub(r"\\([^A-Za-z0-9])", r"\1", alternative)
        for reading in readings
        for alternative in re.split(r"(?<!\\)\|", reading)
    ]


def _string_patterns(node: ast.AST) -> list[Pattern]:
    """The patterns of the strings under ``node`` that a program can print: its string
    literals and f-strings (adjacent literals are one string already; an f-string's values
    become ANY), not its docstrings. A string that looks like a regular expression also counts
    as what it matches."""
    docstrings = {
        id(child.value)
        for child in ast.walk(node)
        if isinstance(child, ast.Expr) and isinstance(child.value, ast.Constant)
    }
    patterns: list[Pattern] = []
    for child in ast.walk(node):
        if isinstance(child, ast.JoinedStr):
            tokens: list[str | None] = []
            for part in child.values:
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    tokens += part.value
                else:
                    tokens.append(ANY)
            patterns.append(tuple(tokens))
        elif (
            isinstance(child, ast.Constant)
            and isinstance(child.value, str)
            and id(child) not in docstrings
        ):
            patterns.append(_pattern_from_text(child.value, _CONSTANT_PLACEHOLDER))
            if any(sign in child.value for sign in ("\\", "(?:", "[^", "|")):
                patterns += [
                    _pattern_from_text(reading, _CONSTANT_PLACEHOLDER)
                    for reading in _regex_readings(child.value)
                ]
    return patterns


@cache
def source_patterns() -> tuple[Pattern, ...]:
    """Every string in bakup's source as a lower-case pattern (the constants inside an
    f-string are visited once more, harmlessly), and the names of the Prometheus alerts bakup
    ships (deploy/prometheus/alerts.yml)."""
    patterns: list[Pattern] = []
    for folder in SOURCE_FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            patterns += _string_patterns(ast.parse(path.read_text(encoding="utf-8")))
    rules = (REPO / "deploy" / "prometheus" / "alerts.yml").read_text(encoding="utf-8")
    patterns += [tuple(name) for name in re.findall(r"- alert: (\w+)", rules)]
    return tuple(tuple(token and token.lower() for token in pattern) for pattern in patterns)


def _quoted_pattern(message: str) -> Pattern:
    """The README's message as a pattern: ``...`` stands for any text."""
    return _pattern_from_text(message, r"\.\.\.")


def _literal_runs(pattern: Pattern) -> list[str]:
    runs, current = [], ""
    for token in pattern:
        if token is ANY:
            runs.append(current)
            current = ""
        else:
            current += token
    return [*runs, current]


def literal_overlap(source: Pattern, quoted: Pattern) -> int:
    """How many of the quote's characters at best match the source string's own characters
    when the source string prints the quote; -1 when it cannot print it.

    Both patterns may stand for any text at their ANY tokens; the quote may begin and end
    anywhere in the source string. A source string's value can print anything, so what counts
    is how much of the quote is the code's literal text.
    """
    impossible = -1
    rows, columns = len(source) + 1, len(quoted) + 1
    best = [[impossible] * columns for _ in range(rows)]
    for i in range(rows):
        best[i][0] = 0
    for i in range(rows):
        for j in range(columns):
            score = best[i][j]
            if score == impossible or j == len(quoted):
                continue
            moves: list[tuple[int, int, int]] = []
            if quoted[j] is ANY:  # the quote's "..." ends, or stands for the next source token
                moves.append((i, j + 1, score))
                if i < len(source):
                    moves.append((i + 1, j, score))
            if i < len(source) and source[i] is ANY:  # a value ends, or prints the quote's next
                moves.append((i + 1, j, score))
                if quoted[j] is not ANY:
                    moves.append((i, j + 1, score))
            if i < len(source) and source[i] is not ANY and source[i] == quoted[j]:
                moves.append((i + 1, j + 1, score + 1))
            for row, column, value in moves:
                best[row][column] = max(best[row][column], value)
    return max(best[i][len(quoted)] for i in range(rows))


def could_print(source: Pattern, quoted: Pattern) -> bool:
    """Whether the source string can print the quote, with most of the quote's characters (and
    at least ten) the code's own text rather than values."""
    literal = sum(token is not ANY for token in quoted)
    return literal_overlap(source, quoted) >= max(10, (literal + 1) // 2)


def found_in_source(message: str) -> bool:
    """Whether bakup's source holds a string that can print ``message``. Letter case does not
    count: bakup recognises PostgreSQL's messages whatever their case."""
    quoted = _quoted_pattern(message.lower())
    # Cheap filter first: a source string worth the full comparison shares 8 characters in a
    # row with the quote.
    grams = {
        run[start : start + 8]
        for run in _literal_runs(quoted)
        for start in range(max(len(run) - 7, 0))
        if len(run) >= 8
    }
    for source in source_patterns():
        source_text = "".join(token or "\0" for token in source)
        if grams and not any(gram in source_text for gram in grams):
            continue
        if could_print(source, quoted):
            return True
    return False


def test_the_troubleshooting_table_quotes_messages() -> None:
    assert len(troubleshooting_messages()) >= 20


@pytest.mark.parametrize("message", troubleshooting_messages())
def test_troubleshooting_message_is_one_bakup_prints(message: str) -> None:
    assert found_in_source(message), (
        f"the README's Troubleshooting table quotes `{message}`, which no string in "
        f"{', '.join(SOURCE_FOLDERS)} can print: quote the message as the code words it"
    )


@pytest.mark.parametrize(
    ("source", "message", "expected"),
    [
        (
            'message = f"{name} has an invalid port {value!r}"',
            "DATABASE_URL has an invalid port 'abc'",
            True,
        ),
        ('message = f"{name} has an invalid port {value!r}"', "... has an invalid port", True),
        ('message = f"{name} has an invalid port {value!r}"', "has an invalid host", False),
        (
            'message = "Skipped backup of %s: another backup of it is running"',
            "Skipped backup of ...",
            True,
        ),
        ('message = "cannot " f"read {count} relations"', "cannot read N relations", True),
        (
            'message = r"server version mismatch\\b"',
            "aborting because of server version mismatch",
            False,
        ),
        (
            'message = r"aborting because of server version mismatch\\b"',
            "server version mismatch",
            True,
        ),
        (
            'message = r"canceling statement due to (?:statement|lock) timeout"',
            "due to lock timeout",
            True,
        ),
        (
            'message = r"\\bdatabase \\"[^\\"]*\\" does not exist"',
            'database "shop" does not exist',
            True,
        ),
        (
            'message = r"connection refused|could not translate host name"',
            "could not translate host",
            True,
        ),
        (
            'def f():\n    """Says that the port is not writable."""',
            "the port is not writable",
            False,
        ),
    ],
)
def test_a_quote_matches_the_strings_that_can_print_it(
    source: str, message: str, expected: bool
) -> None:
    patterns = _string_patterns(ast.parse(source))
    assert any(could_print(p, _quoted_pattern(message)) for p in patterns) is expected
