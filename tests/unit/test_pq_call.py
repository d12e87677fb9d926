"""The text parameters of a plain sync enqueue (workflows_postgres.pq_call.text_params)."""

from __future__ import annotations

import datetime as dt

from workflows_postgres.pq_call import text_params


def test_values_take_postgresql_text_input_forms() -> None:
    got = text_params(("job", "naïve.queue", 7, True, False, 0.5, None, float("inf")))
    assert got == (
        b"job",
        "naïve.queue".encode(),
        b"7",
        b"t",
        b"f",
        b"0.5",
        None,
        b"Infinity",
    )
    assert text_params((float("-inf"), float("nan"))) == (b"-Infinity", b"NaN")


def test_a_value_libpq_would_cut_or_cannot_write_keeps_the_call_on_the_cursor() -> None:
    # libpq sends a text parameter up to its first NUL: the name would arrive cut short.
    assert text_params(("job", "cut\x00short")) is None
    assert text_params((dt.datetime.now(dt.UTC),)) is None
