"""WORKFLOWS_POOLER: read, checked, and what each value asks of the drivers."""

from __future__ import annotations

import pytest

from workflows.config import Settings
from workflows.errors import ConfigurationError
from workflows_postgres import pooler
from workflows_postgres.store import _SESSION


def test_no_pooler_by_default() -> None:
    assert Settings.from_env({}).pooler == "none"


@pytest.mark.parametrize("raw", ["transaction", "Transaction", " session "])
def test_pooler_modes_are_read_in_any_case(raw: str) -> None:
    assert Settings.from_env({"WORKFLOWS_POOLER": raw}).pooler == raw.strip().lower()


@pytest.mark.parametrize("raw", ["pgbouncer", "statement", "transactions"])
def test_an_unknown_pooler_mode_is_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigurationError, match=r"WORKFLOWS_POOLER.*none, transaction, session"):
        Settings.from_env({"WORKFLOWS_POOLER": raw})
    with pytest.raises(ConfigurationError, match="WORKFLOWS_POOLER"):
        Settings(pooler=raw)


def test_without_a_pooler_the_session_settings_stay_startup_parameters() -> None:
    assert pooler.asyncpg_options("none", _SESSION) == {"server_settings": _SESSION}
    assert pooler.after_connect("none", _SESSION) is None
    assert pooler.psycopg_options("none") == {}
    assert pooler.listens(Settings())


def test_transaction_pooling_keeps_no_statement_and_no_session_state() -> None:
    assert pooler.asyncpg_options("transaction", _SESSION) == {"statement_cache_size": 0}
    assert pooler.after_connect("transaction", _SESSION) is None
    assert pooler.psycopg_options("transaction") == {"prepare_threshold": None}
    assert not pooler.listens(Settings(pooler="transaction"))


def test_session_pooling_sends_the_settings_as_set_statements() -> None:
    assert pooler.asyncpg_options("session", _SESSION) == {}
    assert pooler.after_connect("session", _SESSION) is not None
    assert pooler.set_statement({"jit": "off", "application_name": "it's"}) == (
        "SET jit = 'off'; SET application_name = 'it''s'"
    )


def test_a_worker_and_migrate_refuse_transaction_pooling_only() -> None:
    with pytest.raises(ConfigurationError, match="a worker cannot run through a transaction"):
        pooler.require_session(Settings(pooler="transaction"), "a worker", "LISTEN")
    pooler.require_session(Settings(pooler="session"), "a worker", "LISTEN")
    pooler.require_session(Settings(), "a worker", "LISTEN")
