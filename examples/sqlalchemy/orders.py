"""Enqueueing inside a SQLAlchemy session's transaction: sync (psycopg 3) and asyncio (asyncpg).

The job is written through the session's own connection, in its transaction: it exists (and
a worker hears of it) only if the session commits.
"""

from __future__ import annotations

from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from workflows import job


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "shop_order"

    id: Mapped[int] = mapped_column(primary_key=True)
    item: Mapped[str]


@job(queue="emails")
async def send_confirmation(order_id: int) -> str:
    return f"confirmation sent for order {order_id}"


def place_order(sessions: sessionmaker[Session], item: str, *, fail: bool = False) -> int:
    """The sync flavour: a ``postgresql+psycopg://`` engine."""
    with sessions() as session, session.begin():
        order = Order(item=item)
        session.add(order)
        session.flush()  # the INSERT runs, in the transaction, and gives the id
        # The psycopg.Connection under the session's, in its transaction.
        raw = session.connection().connection.driver_connection
        send_confirmation.options(conn=raw).queue_sync(order.id)
        if fail:
            raise RuntimeError("payment declined")
        return order.id


async def place_order_async(
    sessions: async_sessionmaker[AsyncSession], item: str, *, fail: bool = False
) -> int:
    """The asyncio flavour: a ``postgresql+asyncpg://`` engine."""
    async with sessions() as session, session.begin():
        order = Order(item=item)
        session.add(order)
        # A statement first: SQLAlchemy opens the asyncpg transaction on the first one, so a
        # raw connection taken before it would enqueue outside the transaction.
        await session.flush()
        connection = await session.connection()
        raw = (await connection.get_raw_connection()).driver_connection
        await send_confirmation.options(conn=raw).queue(order.id)
        if fail:
            raise RuntimeError("payment declined")
        return order.id


# ---- setup ---------------------------------------------------------------------------------


def sync_sessions(database_url: str) -> sessionmaker[Session]:
    """Sessions of a ``postgresql://`` URL through psycopg 3, the app's table created."""
    engine = create_engine(_with_driver(database_url, "psycopg"))
    Base.metadata.create_all(engine)
    return sessionmaker(engine)


def async_sessions(database_url: str) -> tuple[AsyncEngine, async_sessionmaker[AsyncSession]]:
    """Sessions of a ``postgresql://`` URL through asyncpg (create the table with the sync ones)."""
    engine = create_async_engine(_with_driver(database_url, "asyncpg"))
    return engine, async_sessionmaker(engine, expire_on_commit=False)


def _with_driver(url: str, driver: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"postgresql+{driver}://{rest}" if scheme in ("postgres", "postgresql") else url
