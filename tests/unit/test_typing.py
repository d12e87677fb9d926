"""Typed workflow code under ``mypy --strict``: the README's examples, the types inferred, the
calls refused.

One mypy run (the pinned MYPY of noxfile.py) checks three sets of files:
- the README's examples, generated from README.md here so they cannot drift: a block of the
  quick start introduced by a file name (`app.py`, `client.py`) becomes that file, every other
  ```python block of the quick start and of "The API" becomes the body of a function of its own
  in a module that imports tests/typing/readme_context.py (the few names the snippets take for
  granted; tests/typing/shop stands for the application package they import);
- tests/typing/accepted.py: ``assert_type`` of what ``await act.run()``, ``get_result(id)`` &
  co give;
- tests/typing/rejected.py: wrong calls, each line marked ``# E: <code>``.
mypy must report exactly the marked lines with their codes, and nothing else.
"""

from __future__ import annotations

import os
import re
import site
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import workflows

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TYPING = ROOT / "tests" / "typing"
# The sections whose code is the product's promise.
SECTIONS = ("## Quick start", "## The API", "## Testing your jobs and workflows")
_FILE_NAME = re.compile(r"^`(\w+\.py)`")
_ERROR = re.compile(r"^(?P<path>.+?):(?P<line>\d+): error: (?P<message>.*)  \[(?P<code>[a-z-]+)\]$")
_MARK = re.compile(r"# E: ([a-z-]+(?:, [a-z-]+)*)\s*$")


@dataclass(frozen=True)
class Block:
    start: int  # README line of the block's first line of code
    code: str
    file_name: str | None  # the file the text just before the block names, if any


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    code: str


def readme_blocks() -> list[Block]:
    lines = README.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    section = ""
    k = 0
    while k < len(lines):
        line = lines[k]
        if line.startswith("## "):
            section = line
        if line == "```python" and section.startswith(SECTIONS):
            end = lines.index("```", k + 1)
            before = next((t for t in reversed(lines[:k]) if t.strip()), "")
            named = _FILE_NAME.match(before)
            code = "\n".join(lines[k + 1 : end]) + "\n"
            blocks.append(Block(k + 2, code, named.group(1) if named else None))
            k = end
        k += 1
    return blocks


def write_readme_examples(folder: Path) -> tuple[list[Path], dict[tuple[str, int], int]]:
    """The README's examples as files in ``folder``; and (file, line) -> README line."""
    where: dict[tuple[str, int], int] = {}
    files: list[Path] = []
    snippets = ['"""Generated from README.md by tests/unit/test_typing.py."""', ""]
    snippets.append("from readme_context import *")
    for block in readme_blocks():
        if block.file_name is not None:
            path = folder / block.file_name
            path.write_text(block.code, encoding="utf-8")
            files.append(path)
            for n in range(block.code.count("\n")):
                where[block.file_name, n + 1] = block.start + n
            continue
        # A function of its own: snippets `await` at the top and reuse names among them.
        snippets += ["", "", f"async def readme_line_{block.start}() -> None:"]
        for n, text in enumerate(block.code.splitlines()):
            snippets.append(textwrap.indent(text, "    "))
            where["readme_api.py", len(snippets)] = block.start + n
    api = folder / "readme_api.py"
    api.write_text("\n".join(snippets) + "\n", encoding="utf-8")
    return [*files, api], where


def marked(path: Path) -> set[Finding]:
    found = set()
    for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        mark = _MARK.search(text)
        if mark:
            found |= {Finding(path.name, n, code) for code in mark.group(1).split(", ")}
    return found


def mypy_env() -> dict[str, str]:
    """Check the `workflows` this process imports, not another copy mypy might find first.

    In a checkout (PYTHONPATH pointing at packages/*/src) that is the source folder; an
    installed package is already what mypy finds in site-packages (which MYPYPATH refuses).
    """
    env = dict(os.environ)
    source = Path(workflows.__file__).resolve().parents[1]
    installed = {Path(p).resolve() for p in [*site.getsitepackages(), site.getusersitepackages()]}
    if source not in installed:
        env["MYPYPATH"] = str(source)
    return env


@dataclass(frozen=True)
class MypyRun:
    findings: set[Finding]
    messages: dict[Finding, str]
    readme_lines: dict[tuple[str, int], int]
    blocks: list[Block]


@pytest.fixture(scope="module")
def mypy_run(tmp_path_factory: pytest.TempPathFactory) -> MypyRun:
    folder = tmp_path_factory.mktemp("readme")
    generated, readme_lines = write_readme_examples(folder)
    checked = [
        *generated,
        TYPING / "readme_context.py",
        TYPING / "accepted.py",
        TYPING / "rejected.py",
    ]
    command = [
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        # The project's [tool.mypy] aside: exactly what a user's `mypy --strict` does.
        "--config-file=",
        "--cache-dir=" + str(folder / ".mypy_cache"),
        "--no-error-summary",
        "--hide-error-context",
        "--no-pretty",
        "--show-error-codes",
        *map(str, checked),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, env=mypy_env(), cwd=folder, timeout=120
    )
    # 0: no error, 1: errors found; anything else is mypy itself failing.
    assert done.returncode in (0, 1), f"mypy failed:\n{done.stdout}\n{done.stderr}"
    findings: set[Finding] = set()
    messages: dict[Finding, str] = {}
    for text in done.stdout.splitlines():
        error = _ERROR.match(text)
        if error is None:
            assert ": note: " in text, f"unexpected mypy output: {text}"
            continue
        finding = Finding(Path(error["path"]).name, int(error["line"]), error["code"])
        findings.add(finding)
        messages[finding] = error["message"]
    return MypyRun(findings, messages, readme_lines, readme_blocks())


def described(run: MypyRun, findings: set[Finding]) -> str:
    out = []
    for f in sorted(findings, key=lambda f: (f.file, f.line, f.code)):
        place = f"{f.file}:{f.line}"
        if (f.file, f.line) in run.readme_lines:
            place = f"README.md:{run.readme_lines[f.file, f.line]} ({place})"
        out.append(f"{place}: [{f.code}] {run.messages.get(f, '(not reported)')}")
    return "\n".join(out)


def test_the_readme_examples_are_all_checked(mypy_run: MypyRun) -> None:
    # A renamed heading or fence must not quietly leave the examples unchecked.
    named = {b.file_name for b in mypy_run.blocks if b.file_name}
    assert named == {"app.py", "client.py"}
    snippets = [b for b in mypy_run.blocks if b.file_name is None]
    assert len(snippets) >= 6
    assert any('charge["transaction_id"]' in b.code for b in mypy_run.blocks)


def test_readme_examples_pass_mypy_strict(mypy_run: MypyRun) -> None:
    # And whatever they import: every file but the two of tests/typing checked below.
    readme = {f for f in mypy_run.findings if f.file not in ("accepted.py", "rejected.py")}
    assert not readme, "the README's examples fail mypy --strict:\n" + described(mypy_run, readme)


def test_results_are_typed_as_the_functions_return_types(mypy_run: MypyRun) -> None:
    wrong = {f for f in mypy_run.findings if f.file == "accepted.py"}
    assert not wrong, "tests/typing/accepted.py:\n" + described(mypy_run, wrong)


def test_wrong_calls_are_refused_exactly_where_marked(mypy_run: MypyRun) -> None:
    expected = marked(TYPING / "rejected.py")
    reported = {f for f in mypy_run.findings if f.file == "rejected.py"}
    assert len(expected) >= 20
    problems = []
    if reported - expected:
        problems.append("reported but not marked:\n" + described(mypy_run, reported - expected))
    if expected - reported:
        problems.append("marked but not reported:\n" + described(mypy_run, expected - reported))
    assert not problems, "tests/typing/rejected.py: " + "\n".join(problems)
