"""Finds every place SQL can write ``'running'``: the scanner behind the admission-point rule.

The rule: an execution becomes ``running`` in one place only, the SQL function ``{s}.admit``
(migration 0006), so flow control (concurrency, rate limits) written there cannot be bypassed.
:func:`running_transitions` finds the writes of the literal ``'running'`` in a piece of SQL:

* an assignment in an UPDATE's SET list to ``status`` (or to a column list holding it), and a
  literal in the FROM clause of such an UPDATE (a value joined in, ``FROM (VALUES ...)``);
* the ``status`` value of an INSERT (``VALUES`` rows or the SELECT list; the rest of the
  statement when its shape is not one of those, or when it names no columns);
* a PL/pgSQL assignment (``:=``, or ``=`` as a statement) of ``'running'`` to anything: a
  variable that holds ``'running'`` is on its way to a status column.

A literal that cannot be the written value is left out: a comparison operand (``= 'running'``,
``<> 'running'``, ``IN (...)``, ``= ANY (ARRAY[...])``, ``IS DISTINCT FROM``, ``LIKE``),
anything inside a CASE's WHEN condition or simple-CASE operand, anything under ``EXISTS``. So is
a CASE branch that only keeps a running row running, ``WHEN [row.]status = 'running' AND ...
THEN 'running'`` where ``row`` is the updated table or its alias: the row was running already,
so nothing is admitted (the `cancel_tree` statement leaves running activities running for
their worker to stop). Any other WHEN, an OR in it, or another row's status does not count.

Out of reach, by design of a text scan: a status written from a parameter or a column
(``SET status = v.status`` with ``'running'`` in the caller's arguments). The scanner is a
guard against a route written by mistake, not against one hidden on purpose.

The sources (:func:`scan_source_tree`, :func:`scan_functions`) are the store's ``.sql`` files
(migrations excepted: they are history, and the database's current function bodies are what
runs), Python string constants, and the functions of a migrated schema.
"""

from __future__ import annotations

import ast
import bisect
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

# The findings that are the admission point itself, by Finding.name. Only the function admit
# (0006) may write 'running'; a statement or function that needs to start an execution calls
# it. A function body is named "function <name>" wherever it is read (the database, or
# schema.sql, which tests/integration/test_schema.py keeps equal to the migrations).
ADMISSION_POINTS = frozenset({"function admit"})

RUNNING = "running"

_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<line_comment>--[^\n]*)
    | (?P<block_comment>/\*)
    | (?P<string>[eE]'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*')
    | (?P<ident>"(?:[^"]|"")*")
    | (?P<dollar>\$(?:[A-Za-z_][A-Za-z_0-9]*)?\$)
    | (?P<param>\$\d+)
    | (?P<placeholder>\{\w*\})
    | (?P<word>[A-Za-z_][A-Za-z_0-9$]*)
    | (?P<number>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)
    | (?P<op>::|:=|<=|>=|<>|!=|=>|\|\||->>|->|@>|<@|.)
    """,
    re.VERBOSE | re.DOTALL,
)
_OPENERS = {"(", "["}
_CLOSERS = {")", "]"}
_COMPARISONS = {"=", "<>", "!=", "<", ">", "<=", ">="}
# A group opened right after one of these holds compared values (or a boolean test): nothing
# inside it is written.
_COMPARED_GROUPS = {"in", "any", "all", "some", "exists"}
_SET_LIST_END = {"from", "where", "returning", "when"}
_SELECT_LIST_END = {
    "from", "where", "group", "having", "window", "order", "limit", "offset", "fetch", "for",
    "union", "intersect", "except", "on", "returning",
}  # fmt: skip
# The words after the first in a type's name: `character varying`, `timestamp with time zone`.
_TYPE_NAME_TAILS = {"varying", "precision", "with", "without", "time", "zone"}
_SET_OPERATIONS = {"union", "intersect", "except"}
# PL/pgSQL words a statement can follow (besides a semicolon).
_STATEMENT_START = {"begin", "then", "else", "loop", "declare"}


@dataclass(frozen=True)
class Finding:
    """One write of ``'running'``: where (``line`` of the literal) and what (``excerpt``)."""

    kind: str
    line: int
    excerpt: str
    source: str = ""
    name: str = ""

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.source else f"line {self.line}"
        return f"{where}: {self.name or '?'}: {self.kind}: {self.excerpt}"


@dataclass(frozen=True)
class _Token:
    kind: str  # word (keyword or bare name, lower-cased), ident (quoted/placeholder), str, ...
    text: str
    start: int
    end: int


def _tokenize(sql: str) -> list[_Token]:
    """SQL tokens, comments dropped. Dollar quotes are dropped too, so a function body written
    inside a string (a migration-like statement in Python) is scanned as the code it is."""
    tokens: list[_Token] = []
    pos = 0
    while pos < len(sql):
        match = _TOKEN.match(sql, pos)
        assert match is not None  # the last alternative matches any character
        kind = match.lastgroup or "op"
        end = match.end()
        if kind == "block_comment":
            end = _block_comment_end(sql, pos)
        elif kind == "word":
            tokens.append(_Token("word", match[0].lower(), pos, end))
        elif kind == "ident":
            tokens.append(_Token("ident", match[0][1:-1].replace('""', '"'), pos, end))
        elif kind == "placeholder":
            tokens.append(_Token("ident", match[0], pos, end))
        elif kind == "string":
            body = match[0][2:-1] if match[0][0] in "eE" else match[0][1:-1]
            tokens.append(_Token("str", body.replace("''", "'"), pos, end))
        elif kind in ("param", "number", "op"):
            tokens.append(_Token(kind, match[0], pos, end))
        pos = end
    return tokens


def _block_comment_end(sql: str, pos: int) -> int:
    # PostgreSQL nests block comments.
    depth = 0
    while pos < len(sql):
        if sql.startswith("/*", pos):
            depth += 1
            pos += 2
        elif sql.startswith("*/", pos):
            depth -= 1
            pos += 2
            if depth == 0:
                return pos
        else:
            pos += 1
    return pos


class _Scan:
    """One piece of SQL: its tokens, their bracket depths, and the findings so far."""

    def __init__(self, sql: str) -> None:
        self.sql = sql
        self.tokens = _tokenize(sql)
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", sql)]
        # depth[i]: brackets open around token i (an opener and its closer share a depth).
        self.depth: list[int] = []
        level = 0
        for tok in self.tokens:
            if tok.kind == "op" and tok.text in _CLOSERS:
                level = max(level - 1, 0)
                self.depth.append(level)
            elif tok.kind == "op" and tok.text in _OPENERS:
                self.depth.append(level)
                level += 1
            else:
                self.depth.append(level)
        self.found: dict[int, Finding] = {}

    # ---- token tests -------------------------------------------------------------------

    def kw(self, i: int, *words: str) -> bool:
        return (
            0 <= i < len(self.tokens)
            and self.tokens[i].kind == "word"
            and self.tokens[i].text in words
        )

    def op(self, i: int, *ops: str) -> bool:
        return (
            0 <= i < len(self.tokens) and self.tokens[i].kind == "op" and self.tokens[i].text in ops
        )

    def name(self, i: int) -> bool:
        return 0 <= i < len(self.tokens) and self.tokens[i].kind in ("word", "ident")

    def is_running(self, i: int) -> bool:
        tok = self.tokens[i]
        return tok.kind == "str" and tok.text.lower() == RUNNING

    def is_status(self, i: int) -> bool:
        return self.name(i) and self.tokens[i].text == "status"

    # ---- walking -----------------------------------------------------------------------

    def clause_end(self, start: int, stops: set[str], base: int | None = None) -> int:
        """The index where the clause from ``start`` ends: a ``;``, a bracket closing around it,
        or one of ``stops`` at its own level (outside any CASE)."""
        if base is None:
            base = self.depth[start] if start < len(self.tokens) else 0
        cases = 0
        for j in range(start, len(self.tokens)):
            if self.depth[j] < base or (self.depth[j] == base and self.op(j, ";")):
                return j
            if self.depth[j] != base:
                continue
            if self.kw(j, "case") and not self.kw(j - 1, "end"):
                cases += 1
            elif self.kw(j, "end") and cases:
                cases -= 1
            elif (
                cases == 0
                and self.kw(j, *stops)
                and not (self.kw(j, "from") and self.kw(j - 1, "distinct"))
            ):
                return j
        return len(self.tokens)

    def split(self, start: int, end: int, separator: str = ",") -> list[tuple[int, int]]:
        """``[start, end)`` cut at the separators on its own level."""
        base = self.depth[start] if start < end else 0
        parts: list[tuple[int, int]] = []
        begin = start
        for j in range(start, end):
            if self.depth[j] == base and (
                self.op(j, separator) if separator == "," else self.kw(j, separator)
            ):
                parts.append((begin, j))
                begin = j + 1
        parts.append((begin, end))
        return parts

    def text(self, start: int, end: int) -> str:
        if start >= end:
            return ""
        raw = self.sql[self.tokens[start].start : self.tokens[end - 1].end]
        flat = " ".join(raw.split())
        return flat if len(flat) <= 120 else flat[:117] + "..."

    def line(self, i: int) -> int:
        return bisect.bisect_right(self.line_starts, self.tokens[i].start)

    def report(self, kind: str, literals: Iterable[int], start: int, end: int) -> None:
        for i in literals:
            self.found.setdefault(i, Finding(kind, self.line(i), self.text(start, end)))

    # ---- what can be written -----------------------------------------------------------

    def written(self, start: int, end: int, selves: set[str] | None) -> list[int]:
        """The ``'running'`` literals in expression ``[start, end)`` that can be its value.

        ``selves``: the names of the row being updated (a keep-running branch is recognised
        only for them, or for an unqualified ``status``); None when there is no such row.
        """
        found: list[int] = []
        frames: list[_Frame] = []
        for j in range(start, end):
            if self.op(j, *_OPENERS):
                frames.append(_Frame("group", opener=j))
                continue
            if self.op(j, *_CLOSERS):
                while frames and frames.pop().kind != "group":
                    pass
                continue
            top = frames[-1] if frames else None
            if self.kw(j, "case") and not self.kw(j - 1, "end"):
                frames.append(_Frame("case", opener=j, state="operand"))
                continue
            if top is not None and top.kind == "case":
                if self.kw(j, "when"):
                    if top.state == "operand":
                        top.operand = (top.opener + 1, j)
                    top.state, top.condition = "when", (j + 1, j + 1)
                    continue
                if self.kw(j, "then"):
                    top.state, top.condition = "then", (top.condition[0], j)
                    continue
                if self.kw(j, "else"):
                    top.state = "else"
                    continue
                if self.kw(j, "end"):
                    frames.pop()
                    continue
            if not self.is_running(j):
                continue
            if any(f.kind == "case" and f.state in ("operand", "when") for f in frames):
                continue
            if any(f.kind == "group" and self.compared_group(f.opener) for f in frames):
                continue
            if self.compared(j, start, end):
                continue
            if (
                top is not None
                and top.kind == "case"
                and top.state == "then"
                and self.kw(j - 1, "then")
                and self.kw(self.after_cast(j + 1), "when", "else", "end")
                and selves is not None
                and self.keeps_running(top, selves)
            ):
                continue
            found.append(j)
        return found

    def compared_group(self, opener: int) -> bool:
        return self.op(opener, "(") and self.kw(opener - 1, *_COMPARED_GROUPS)

    def after_cast(self, j: int) -> int:
        """Past a ``::type`` (``::text``, ``::character varying``, ``::text[]``) at ``j``."""
        while self.op(j, "::") and self.name(j + 1):
            j += 2
            while self.kw(j, *_TYPE_NAME_TAILS):
                j += 1
            while self.op(j, "[") and self.op(j + 1, "]"):
                j += 2
        return j

    def compared(self, j: int, start: int, end: int) -> bool:
        """Whether the literal at ``j`` is an operand of a comparison inside ``[start, end)``
        (the ``=`` of ``SET status = 'running'`` lies before the expression, so never counts)."""
        after = self.after_cast(j + 1)
        before_ok = j - 1 >= start
        after_ok = after < end
        return (
            (before_ok and self.op(j - 1, *_COMPARISONS))
            or (after_ok and self.op(after, *_COMPARISONS))
            or (before_ok and self.kw(j - 1, "like", "ilike"))
            or (after_ok and self.kw(after, "like", "ilike", "is"))
            or (j - 2 >= start and self.kw(j - 1, "from") and self.kw(j - 2, "distinct"))
        )

    def keeps_running(self, case: _Frame, selves: set[str]) -> bool:
        """Whether the current branch of ``case`` runs only for a row already running."""
        cond_start, cond_end = case.condition
        if case.operand is not None and case.operand[0] < case.operand[1]:
            # Simple CASE: `CASE [row.]status WHEN 'running' THEN 'running'`.
            operand_start, operand_end = case.operand
            return self.own_status(operand_start, operand_end, selves) and (
                cond_start < cond_end
                and self.is_running(cond_start)
                and self.tokens[cond_start].text == RUNNING
                and self.after_cast(cond_start + 1) == cond_end
            )
        return any(
            self.status_is_running(a, b, selves) for a, b in self.conjuncts(cond_start, cond_end)
        )

    def unwrap(self, start: int, end: int) -> tuple[int, int]:
        """``[start, end)`` without the brackets that enclose all of it."""
        while (
            end - start >= 2
            and self.op(start, "(")
            and self.clause_end(start + 1, set()) == end - 1
            and self.op(end - 1, ")")
        ):
            start, end = start + 1, end - 1
        return start, end

    def conjuncts(self, start: int, end: int) -> list[tuple[int, int]]:
        """The terms that must all hold for ``[start, end)`` to hold (none if it has an OR)."""
        start, end = self.unwrap(start, end)
        if start >= end:
            return []
        base = self.depth[start]
        if any(self.kw(j, "or") and self.depth[j] == base for j in range(start, end)):
            return []
        parts = self.split(start, end, "and")
        if len(parts) == 1:
            return parts
        return [term for a, b in parts for term in self.conjuncts(a, b)]

    def status_is_running(self, start: int, end: int, selves: set[str]) -> bool:
        """``[start, end)`` is ``[row.]status = 'running'``, either way round."""
        start, end = self.unwrap(start, end)
        for eq in range(start, end):
            if self.op(eq, "=") and self.depth[eq] == self.depth[start]:
                left, right = (start, eq), (eq + 1, end)
                for side, other in ((left, right), (right, left)):
                    if (
                        self.own_status(*side, selves)
                        and self.is_running(other[0])
                        and self.tokens[other[0]].text == RUNNING
                        and self.after_cast(other[0] + 1) == other[1]
                    ):
                        return True
                return False
        return False

    def own_status(self, start: int, end: int, selves: set[str]) -> bool:
        if end - start == 1:
            return self.is_status(start)
        return (
            end - start == 3
            and self.name(start)
            and self.tokens[start].text in selves
            and self.op(start + 1, ".")
            and self.is_status(start + 2)
        )

    # ---- statements --------------------------------------------------------------------

    def update(self, i: int) -> None:
        """UPDATE ... SET (also ON CONFLICT DO UPDATE SET and MERGE's UPDATE SET)."""
        j = i + 1
        selves: set[str] = set()
        if self.kw(j, "only"):
            j += 1
        if not self.kw(j, "set"):
            if not self.name(j):
                return
            while self.name(j) and self.op(j + 1, ".") and self.name(j + 2):
                j += 2
            selves.add(self.tokens[j].text)
            j += 1
            if self.op(j, "*"):
                j += 1
            if self.kw(j, "as"):
                j += 1
            if self.name(j) and not self.kw(j, "set"):
                selves.add(self.tokens[j].text)
                j += 1
            if not self.kw(j, "set"):
                return  # FOR UPDATE [OF ...], not an UPDATE statement
        list_start = j + 1
        list_end = self.clause_end(list_start, _SET_LIST_END)
        assigns_status = False
        for start, end in self.split(list_start, list_end):
            eq = next(
                (
                    k
                    for k in range(start, end)
                    if self.op(k, "=") and self.depth[k] == self.depth[start]
                ),
                None,
            )
            if eq is None:
                continue
            if self.op(start, "("):
                # (a, status, ...) = (...): the whole right-hand side, no branch spared.
                if not any(self.is_status(k) for k in range(start, eq)):
                    continue
                assigns_status = True
                self.report("update", self.written(eq + 1, end, None), start, end)
            elif self.is_status(eq - 1):
                assigns_status = True
                self.report("update", self.written(eq + 1, end, selves), start, end)
        if assigns_status and self.kw(list_end, "from"):
            from_end = self.clause_end(list_end + 1, {"where", "returning"})
            self.report(
                "update-from", self.written(list_end + 1, from_end, None), list_end, from_end
            )

    def insert(self, i: int) -> None:
        """INSERT [INTO] table [AS alias] [(columns)] VALUES/SELECT ... (also MERGE's INSERT)."""
        j = i + 1
        if self.kw(j, "into"):
            j += 1
        if not self.name(j):
            return
        while self.name(j) and self.op(j + 1, ".") and self.name(j + 2):
            j += 2
        j += 1
        if self.kw(j, "as"):
            j += 2
        columns: list[str] | None = None
        if self.op(j, "(") and not self.kw(j + 1, "select", "with", "values"):
            close = self.clause_end(j + 1, set())
            columns = [
                self.tokens[b - 1].text if b > a else "" for a, b in self.split(j + 1, close)
            ]
            j = close + 1
        end = self.clause_end(j, set(), base=self.depth[i])
        if columns is not None and "status" not in columns:
            return  # the column default, checked on its own
        items: list[tuple[int, int]] | None = None
        if columns is not None and self.kw(j, "values"):
            items = []
            k = j + 1
            while self.op(k, "("):
                close = self.clause_end(k + 1, set())
                row = self.split(k + 1, close)
                if len(row) != len(columns):
                    items = None
                    break
                items.append(row[columns.index("status")])
                k = close + 1
                if not self.op(k, ","):
                    break
                k += 1
        elif columns is not None and self.kw(j, "select"):
            list_end = self.clause_end(j + 1, _SELECT_LIST_END)
            row = self.split(j + 1, list_end)
            set_operation = any(
                self.kw(k, *_SET_OPERATIONS) and self.depth[k] == self.depth[j]
                for k in range(j, end)
            )
            if len(row) == len(columns) and not set_operation:
                items = [row[columns.index("status")]]
        if items is None:
            # A shape not read column by column: every literal in it that can be a value.
            self.report("insert", self.written(j, end, None), i, end)
            return
        for start, stop in items:
            self.report("insert", self.written(start, stop, None), start, stop)

    def assignment(self, i: int) -> None:
        """PL/pgSQL ``target := expr`` (not a named argument ``f(p := x)``) at ``i``."""
        if self.depth[i] > 0:
            return
        start = i - 1
        while start > 0 and self.name(start - 1) and not self.kw(start - 1, *_STATEMENT_START):
            start -= 1
        end = self.clause_end(i + 1, set())
        self.report("assignment", self.written(i + 1, end, None), start, end)

    def statement_assignment(self, i: int) -> None:
        """PL/pgSQL ``target = expr;`` as a statement, starting at ``i``."""
        j = i
        while self.name(j) and self.op(j + 1, ".") and self.name(j + 2):
            j += 2
        if not (self.name(j) and self.op(j + 1, "=")):
            return
        end = self.clause_end(j + 2, {"when", "then", "else", "end"})
        if not self.op(end, ";"):
            return  # a comparison inside a CASE or IF, not an assignment
        self.report("assignment", self.written(j + 2, end, None), i, end)


@dataclass
class _Frame:
    kind: str  # "group" (a bracket) or "case"
    opener: int
    state: str = ""
    operand: tuple[int, int] | None = None
    condition: tuple[int, int] = field(default=(0, 0))


def running_transitions(sql: str) -> list[Finding]:
    """Every place ``sql`` writes the literal ``'running'`` (see the module's docstring)."""
    scan = _Scan(sql)
    for i, tok in enumerate(scan.tokens):
        if scan.kw(i, "update"):
            scan.update(i)
        elif scan.kw(i, "insert"):
            scan.insert(i)
        elif scan.op(i, ":="):
            scan.assignment(i)
        elif tok.kind in ("word", "ident") and (
            i == 0 or scan.op(i - 1, ";") or scan.kw(i - 1, *_STATEMENT_START)
        ):
            scan.statement_assignment(i)
    return [scan.found[i] for i in sorted(scan.found)]


# ---- sources ---------------------------------------------------------------------------------

_NAME_LINE = re.compile(r"^--\s*name:\s*(\S+)", re.MULTILINE)
_FUNCTION_LINE = re.compile(
    r"^CREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|PROCEDURE)\s+(?:\S+\.)?\"?(\w+)",
    re.MULTILINE | re.IGNORECASE,
)


def scan_sql_file(path: Path, label: str) -> list[Finding]:
    """A ``.sql`` file: named blocks (``-- name: x``) one by one, else the whole file with
    each finding named by the function it is in (schema.sql)."""
    text = path.read_text(encoding="utf-8")
    names = list(_NAME_LINE.finditer(text))
    if names:
        bounds = [(0, "(before the first name)")] + [(m.start(), m[1]) for m in names]
        found: list[Finding] = []
        for (start, name), (end, _) in zip(bounds, [*bounds[1:], (len(text), "")], strict=True):
            offset = text.count("\n", 0, start)
            for finding in running_transitions(text[start:end]):
                found.append(replace(finding, source=label, name=name, line=finding.line + offset))
        return found
    functions = [(text.count("\n", 0, m.start()) + 1, m[1]) for m in _FUNCTION_LINE.finditer(text)]
    return [
        replace(finding, source=label, name=_enclosing(functions, finding.line, path.name))
        for finding in running_transitions(text)
    ]


def _enclosing(functions: list[tuple[int, str]], line: int, default: str) -> str:
    before = [name for start, name in functions if start <= line]
    return f"function {before[-1]}" if before else default


def scan_python_file(path: Path, label: str) -> list[Finding]:
    """Every string constant of a Python file that holds ``'running'``, docstrings excepted
    (a bare string statement runs nothing), named by the assignment or function it is in."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    parents: dict[ast.AST, ast.AST] = {}
    docstrings: set[ast.AST] = set()
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            docstrings.add(node.value)
    found: list[Finding] = []
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and f"'{RUNNING}'" in node.value.lower()
            and node not in docstrings
        ):
            continue
        name = _owner(node, parents)
        for finding in running_transitions(node.value):
            found.append(
                replace(finding, source=label, name=name, line=node.lineno + finding.line - 1)
            )
    return found


def _owner(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> str:
    current: ast.AST | None = node
    while current is not None:
        if isinstance(current, ast.Assign | ast.AnnAssign):
            targets = current.targets if isinstance(current, ast.Assign) else [current.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            names += [t.attr for t in targets if isinstance(t, ast.Attribute)]
            if names:
                return names[0]
        if isinstance(current, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            return current.name
        current = parents.get(current)
    return "<module>"


def source_files(root: Path) -> Iterator[Path]:
    """The files whose SQL runs: ``.py`` and ``.sql`` under ``packages/*/src``, migrations
    excepted (history: what their functions became is read from the database or schema.sql)."""
    for path in sorted(root.glob("packages/*/src/**/*")):
        if path.suffix not in (".py", ".sql") or not path.is_file():
            continue
        if path.suffix == ".sql" and "migrations" in path.relative_to(root).parts:
            continue
        yield path


def scan_source_tree(root: Path) -> list[Finding]:
    found: list[Finding] = []
    for path in source_files(root):
        label = path.relative_to(root).as_posix()
        if path.suffix == ".py":
            found += scan_python_file(path, label)
        else:
            found += scan_sql_file(path, label)
    return found


def scan_functions(conn: psycopg.Connection[tuple[str, str]], schema: str) -> list[Finding]:
    """The bodies of the functions and procedures in ``schema`` as the database holds them
    (a body's line 1 is the line of its opening ``$$``)."""
    rows = conn.execute(
        "SELECT p.proname, p.prosrc FROM pg_catalog.pg_proc p"
        " JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = %s ORDER BY p.proname, p.oid",
        (schema,),
    ).fetchall()
    return [
        replace(finding, source=f"{schema}.{name}()", name=f"function {name}")
        for name, body in rows
        for finding in running_transitions(body)
    ]


def unexpected(findings: Iterable[Finding]) -> list[Finding]:
    """The findings that are not the admission point."""
    return [f for f in findings if f.name not in ADMISSION_POINTS]


def describe(findings: Iterable[Finding]) -> str:
    return "\n".join(f"  {finding}" for finding in findings)
