"""No password in any message: DSNs of every shape redacted, drivers' messages scrubbed."""

from __future__ import annotations

import pytest

from workflows.config import Settings
from workflows.errors import DatabaseUnavailableError
from workflows_postgres.connect import connect_sync, redact, scrub
from workflows_postgres.store import PostgresStore

SECRET = "s3cret-Pw"

# (DSN, what redact() shows)
URLS = [
    (f"postgresql://bob:{SECRET}@db:5432/app", "postgresql://bob:***@db:5432/app"),
    (f"postgres://bob:{SECRET}@db/app", "postgres://bob:***@db/app"),
    (f"postgresql+asyncpg://bob:{SECRET}@db/app", "postgresql+asyncpg://bob:***@db/app"),
    (f"postgresql+psycopg://bob:{SECRET}@db/app", "postgresql+psycopg://bob:***@db/app"),
    (f"cockroachdb://bob:{SECRET}@db/app", "cockroachdb://bob:***@db/app"),
    (f"postgresql://:{SECRET}@db/app", "postgresql://:***@db/app"),
    (f"postgresql://bob:{SECRET}@h1:5432,h2:5433/app", "postgresql://bob:***@h1:5432,h2:5433/app"),
    (f"postgresql://db/app?password={SECRET}", "postgresql://db/app?password=***"),
    (f"postgresql://db/app?PASSWORD={SECRET}&x=1", "postgresql://db/app?PASSWORD=***&x=1"),
    (f"postgresql://bob@db/app?a=1&PassWord={SECRET}", "postgresql://bob@db/app?a=1&PassWord=***"),
    # Malformed: unencoded "@", "/", "?" or "[" in the password, a bad percent-escape.
    (f"postgresql://bob:{SECRET}@x/y?z@db/app", "postgresql://bob:***@db/app"),
    (f"postgresql://bob:{SECRET}[@[::1/app", "postgresql://bob:***@[::1/app"),
    (f"postgresql://bob:{SECRET}%zz@db/app", "postgresql://bob:***@db/app"),
    # Nothing to hide: shown as given.
    ("postgresql://bob@db/app", "postgresql://bob@db/app"),
    ("postgresql:///app?host=/tmp", "postgresql:///app?host=/tmp"),
]


def test_redact_hides_the_password_of_every_url_shape() -> None:
    for dsn, shown in URLS:
        assert redact(dsn) == shown, dsn


def test_redact_hides_the_password_of_key_value_strings() -> None:
    for dsn in (
        f"host=db user=bob password={SECRET}",
        f"host=db password='{SECRET} with spaces' user=bob",
        f"host=db password = '{SECRET}\\'s' dbname=app",
    ):
        redacted = redact(dsn)
        # Rebuilt from the parsed pairs, which may come back in another order.
        assert SECRET not in redacted and "with spaces" not in redacted, dsn
        assert "password=***" in redacted and "host=db" in redacted, redacted
    # Strings libpq cannot parse are not shown at all.
    for dsn in (
        f"host=db password={SECRET} and more",
        f"host=db PASSWORD={SECRET}",
        f"host=db password='{SECRET}",
    ):
        assert redact(dsn) == "<unparseable connection string>", dsn
    assert redact("host=db user=bob") == "host=db user=bob"


def test_scrub_removes_the_password_a_driver_message_quotes() -> None:
    url = f"postgresql://bob:{SECRET}@db/app"
    assert scrub(f'bad URI "{url}"', url) == 'bad URI "postgresql://bob:***@db/app"'
    assert scrub(f"token {SECRET} and {SECRET}", url) == "token *** and ***"
    encoded = "postgresql://bob:p%40ss%2Fword@db/app"
    assert scrub("p%40ss%2Fword, p@ss/word", encoded) == "***, ***"
    spaced = f"host=db password='{SECRET} b' user=bob"
    assert scrub(f"got {SECRET} b", spaced) == "got ***"
    assert scrub("nothing to hide", None) == "nothing to hide"


async def test_a_failed_connection_never_shows_the_password() -> None:
    for dsn in (
        f"postgresql://bob:{SECRET}@127.0.0.1:1/app",
        f"postgresql://bob:{SECRET}%zz@127.0.0.1:1/app",
        f"postgresql://bob:{SECRET}[@[::1:1/app",
        f"host=127.0.0.1 port=1 user=bob password={SECRET} and words",
        f"host=127.0.0.1 port=1 user=bob password='{SECRET} and words'",
    ):
        with pytest.raises(DatabaseUnavailableError) as caught:
            connect_sync(dsn).close()
        message = str(caught.value)
        assert message.startswith("cannot connect to ")
        assert SECRET not in message and "and words" not in message, message
        assert len(message.splitlines()) == 1
    # The asyncpg pool's failure goes through the same message.
    url = f"postgresql://bob:{SECRET}@127.0.0.1:1/app"
    with pytest.raises(DatabaseUnavailableError) as caught:
        await PostgresStore.connect(Settings(database_url=url))
    assert SECRET not in str(caught.value)
    assert "postgresql://bob:***@127.0.0.1:1/app" in str(caught.value)
