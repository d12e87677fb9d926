"""The type of the id ``.queue()`` returns: a plain ``str`` that also carries, for a type
checker, what its function returns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

# Covariant: the id of a run returning bool may stand where an id of one returning int goes.
R_co = TypeVar("R_co", covariant=True)


class ExecutionId(str, Generic[R_co]):
    """An execution's id, typed by what its function returns: ``ExecutionId[dict[str, str]]``.

    For type checkers only. At run time the id is the plain ``str`` the store returned, never
    an instance of this class: asyncpg refuses a ``str`` subclass as a ``uuid`` parameter, and
    an id must go wherever a plain one goes (a driver, JSON, a log line, the CLI) exactly as
    before. So ``isinstance(id, ExecutionId)`` is false; ``ExecutionId[T](text)`` gives
    ``text`` back as a plain ``str`` that a type checker takes as the id of a run returning
    ``T`` (for an id read back from storage).

    ``await workflows.get_result(id)`` is typed as ``R_co`` for an ``ExecutionId``, and as
    ``Any`` for a plain ``str``.
    """

    __slots__ = ()

    if not TYPE_CHECKING:

        def __new__(cls, value: Any = "") -> str:
            return str(value)


class ResultTypeMismatch:
    """What mypy gives ``get_result(id)`` assigned to a type the function does not return.

    Never instantiated. mypy infers a call's type variables from the type expected of its
    result before its arguments, so without this the id of a function returning a dict,
    awaited into a ``str`` variable, would fall through to the overload for plain ``str``
    ids (``Any``) unreported; this overload, between the two, makes it an error that names
    the mismatch.
    """

    __slots__ = ()
