"""ExecutionId exists for type checkers: at run time an id is the plain str."""

from __future__ import annotations

import uuid

from workflows import ExecutionId

ID = "0190a3c4-1b2c-7d3e-8f40-5a6b7c8d9e0f"


def test_typing_a_stored_id_gives_the_plain_str_back() -> None:
    # What a user writes to type an id read back from storage: the same text, a plain str,
    # so asyncpg (which refuses str subclasses as uuid parameters) still takes it.
    for made in (ExecutionId(ID), ExecutionId[dict[str, str]](ID), ExecutionId(uuid.UUID(ID))):
        assert made == ID
        assert type(made) is str
    assert not isinstance(ExecutionId(ID), ExecutionId)
