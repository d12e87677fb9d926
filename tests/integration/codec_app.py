"""Functions whose arguments and results are typed values, stored encrypted: the integration
tests of the payload codec run them (`WORKFLOWS_CODEC=tests.integration.codec_app:payloads`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pydantic

from workflows import activity, job, wait_for_signal, workflow
from workflows.crypto import FernetWrapper
from workflows.typed_codec import TypedJsonCodec

# A key for these tests alone (a real one comes from a secret store, never from the code).
KEY = "qyCLD06rMdSRUeUC_KcMC-98KoH2gIm64Md81-tFla0="
# What the tests look for in the raw rows: it must appear in none of them.
SECRET = "4111-1111-SECRET"


@dataclass(frozen=True)
class Receipt:
    id: uuid.UUID
    amount: Decimal
    at: datetime


class Quote(pydantic.BaseModel):
    sku: str
    price: Decimal
    valid_until: date


@dataclass(frozen=True)
class Extra:
    """Registered by a producer's codec only (see the test of an unregistered type)."""

    note: str


payloads = TypedJsonCodec(types=[Receipt, Quote], wrapper=FernetWrapper(KEY))
# The producer of test_unregistered_type_fails_the_execution: one class more than the workers.
producer_with_extra = TypedJsonCodec(types=[Receipt, Quote, Extra], wrapper=FernetWrapper(KEY))

RECEIPT = Receipt(
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    Decimal("1.10"),
    datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC),
)

# Types the workflow's code was handed, per activation, when run in the tests' own process.
seen: list[tuple[str, ...]] = []


@job(queue="codec", retries=2)
async def bill(receipt: Receipt, card: str, when: datetime) -> dict[str, Any]:
    assert isinstance(receipt, Receipt) and isinstance(when, datetime), (receipt, when)
    return {"receipt": receipt, "billed_at": when, "ids": (receipt.id,), "card_tail": card[-6:]}


@job(queue="codec", retries=2)
async def takes_anything(value: Any) -> str:
    return type(value).__name__


@activity(queue="codec")
async def price(sku: str) -> Quote:
    return Quote(sku=sku, price=Decimal("19.99"), valid_until=date(2030, 1, 1))


@activity(queue="codec")
async def stamp(card: str) -> Receipt:
    return RECEIPT


@workflow(queue="codec")
async def checkout(sku: str, card: str) -> dict[str, Any]:
    quote = await price.run(sku)
    receipt = await stamp.run(card)
    approval = await wait_for_signal("approve")
    seen.append((type(quote).__name__, type(receipt).__name__, type(approval["at"]).__name__))
    # On every activation, replays included: a plain dict instead of a Quote would fail here.
    if not (
        isinstance(quote, Quote)
        and isinstance(receipt, Receipt)
        and isinstance(approval["at"], datetime)
    ):
        raise TypeError(f"not the typed values: {quote!r} {receipt!r} {approval!r}")
    return {
        "quote": quote,
        "receipt": receipt,
        "approved_at": approval["at"],
        "total": quote.price + receipt.amount,
    }
