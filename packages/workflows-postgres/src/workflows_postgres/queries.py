"""The store's SQL, kept as SQL: named statements in ``sql/*.sql``, loaded once.

A file holds blocks that each start with a ``-- name: <name>`` line. Statements, migrations
and ``schema.sql`` share one template syntax, filled by :meth:`Queries.render`: ``{s}`` is
the quoted schema, ``{work}``/``{cancel}``/``{done}``/``{start}`` the notification channels.
Parameters are ``$n`` (asyncpg); :func:`to_psycopg` rewrites them for psycopg.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from workflows.config import validate_schema_name

_NAME = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
_DOLLAR = re.compile(r"\$(\d+)")


def quote_ident(name: str) -> str:
    # Only validated identifiers reach here; quoting keeps reserved words safe too.
    return '"' + validate_schema_name(name) + '"'


def parse(text: str, source: str = "<sql>") -> dict[str, str]:
    """The named statements of one file's text, by name."""
    found: dict[str, str] = {}
    parts = _NAME.split(text)
    # parts: [preamble, name1, body1, name2, body2, ...]
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in found:
            raise ValueError(f"{source}: statement {name!r} defined twice")
        found[name] = body.strip() + "\n"
    return found


@cache
def statements() -> dict[str, str]:
    """Every named statement of the package's ``sql`` folder (names are unique across files)."""
    found: dict[str, str] = {}
    for entry in sorted(resources.files("workflows_postgres.sql").iterdir(), key=str):
        if not entry.name.endswith(".sql"):
            continue
        for name, text in parse(entry.read_text(encoding="utf-8"), entry.name).items():
            if name in found:
                raise ValueError(f"{entry.name}: statement {name!r} defined twice")
            found[name] = text
    return found


@dataclass(frozen=True)
class Queries:
    """The statements rendered for one schema (each rendered once, on first use)."""

    schema: str
    work_channel: str
    cancel_channel: str
    done_channel: str
    start_channel: str
    _rendered: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def for_schema(cls, schema: str) -> Queries:
        validate_schema_name(schema)
        return cls(
            schema, f"{schema}_work", f"{schema}_cancel", f"{schema}_done", f"{schema}_start"
        )

    def render(self, template: str) -> str:
        """Any SQL text of this package (statement, migration, schema.sql) for this schema."""
        return (
            template.replace("{s}", quote_ident(self.schema))
            .replace("{work}", self.work_channel)
            .replace("{cancel}", self.cancel_channel)
            .replace("{done}", self.done_channel)
            .replace("{start}", self.start_channel)
        )

    def sql(self, name: str) -> str:
        """The named statement for this schema."""
        text = self._rendered.get(name)
        if text is None:
            text = self._rendered[name] = self.render(statements()[name])
        return text


def to_psycopg(sql: str) -> str:
    """``$n`` placeholders as psycopg's ``%(pn)s`` (a literal ``%`` doubled)."""
    return _DOLLAR.sub(lambda m: f"%(p{m[1]})s", sql.replace("%", "%%"))


def to_psycopg_positional(sql: str) -> str:
    """``$n`` placeholders as psycopg's positional ``%s``, for a statement that uses
    ``$1``, ``$2``... each once and in order (ValueError otherwise): a tuple of parameters
    then binds as it is, without a dict of them built for each call."""
    numbers = [int(m[1]) for m in _DOLLAR.finditer(sql)]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError("the statement's parameters are not $1, $2... each once in order")
    return _DOLLAR.sub("%s", sql.replace("%", "%%"))
