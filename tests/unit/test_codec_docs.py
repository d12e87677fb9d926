"""docs/codec.md's examples run as written (the Fernet one included), in order, as one module."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "codec.md"


def test_the_codec_documentation_examples_run(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(encoding="utf-8"), re.M | re.S)
    assert len(blocks) == 2
    module = types.ModuleType("codec_docs_example")
    # Dataclasses and pydantic look their class's module up.
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), module.__dict__)
    from workflows import codec

    assert codec.current() is codec.DEFAULT
