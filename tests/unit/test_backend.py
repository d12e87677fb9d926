"""Core finds the installed store through the ``workflows.stores`` entry point group."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import workflows.store as store_module
from workflows import ConfigurationError


@pytest.fixture(autouse=True)
def fresh_discovery() -> Iterator[None]:
    saved = store_module._backend
    store_module._backend = None
    try:
        yield
    finally:
        store_module._backend = saved


def test_the_postgres_store_is_found_by_its_entry_point() -> None:
    import workflows_postgres.backend

    assert store_module.backend() is workflows_postgres.backend


def test_a_store_named_but_not_installed_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKFLOWS_STORE", "mongodb")
    with pytest.raises(ConfigurationError, match=r"WORKFLOWS_STORE='mongodb'.*installed: postgres"):
        store_module.backend()


def test_no_store_installed_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "_entry_points", lambda: {})
    with pytest.raises(ConfigurationError, match="pip install workflows-postgres"):
        store_module.backend("enqueueing")
