"""Tables for people: fitted to 80-120 columns with an ellipsis, whole when piped."""

from __future__ import annotations

import io
import json
import os
from typing import Any

import pytest

from workflows_cli import render

ID = "01a22b74-19d0-7394-98f9-10fccc57f012"


def rows(n: int = 3, long: int = 200) -> list[dict[str, Any]]:
    return [
        {
            "id": ID,
            "kind": "workflow",
            "name": f"app.module:{'n' * long}{i}",
            "queue": "q" * 100,
            "status": "cancelled",
            "priority": 0,
            "attempts": 1,
            "created_at": "2026-11-30T07:50:02.123456+00:00",
            "schedule": "nightly",
            "schedule_tick": "2026-11-30T02:00:00+00:00",
        }
        for i in range(n)
    ]


def test_truncate_keeps_short_text_and_ends_cut_text_in_an_ellipsis() -> None:
    assert render.truncate("short", 10) == "short"
    assert render.truncate("exactly10!", 10) == "exactly10!"
    assert render.truncate("a longer value", 8) == "a longe\u2026"
    assert len(render.truncate("x" * 500, 37)) == 37
    assert render.truncate("abc", 1) == "\u2026"


def test_a_name_loses_its_start_and_keeps_its_indentation() -> None:
    assert render.truncate_start("app.module:send_email", 12) == "\u2026:send_email"
    assert render.truncate_start("    app.module:send_email", 15) == "    \u2026send_email"
    assert render.truncate_start("short", 12) == "short"
    table = render.table([{"name": "a.very.long.module.path:charge_card"}], ("name",), width=80)
    assert table.splitlines()[1] == "a.very.long.module.path:charge_card"
    cut = render.table(
        [{"name": "m" * 100 + ":charge_card", "x": "y" * 100}], ("name", "x"), width=80
    )
    assert cut.splitlines()[1].split()[0].endswith(":charge_card")


@pytest.mark.parametrize("width", [80, 100, 120])
def test_every_line_fits_and_ids_statuses_and_times_stay_whole(width: int) -> None:
    table = render.executions_table(rows(), width)
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= width
    assert all(ID in line for line in lines[1:])
    assert all("cancelled" in line for line in lines[1:])
    assert any("\u2026" in line for line in lines[1:])  # the long name was cut, visibly
    if width == 120:
        assert "2026-11-30 07:50:02" in lines[1]  # a UTC timestamp to the second


def test_without_a_width_values_stay_whole() -> None:
    data = rows(long=300)
    table = render.executions_table(data, None)
    assert data[0]["name"] in table and "\u2026" not in table
    # JSON keeps everything whatever the width.
    assert json.loads(render.to_json(data)) == data


def test_fit_gives_from_the_widest_first_and_stops_at_floors() -> None:
    assert render.fit([10, 50, 30], [4, 4, 4], 40) == [10, 13, 13]
    assert render.fit([10, 20], [4, 4], 100) == [10, 20]
    # Floors win over the width: the caller leaves columns out instead (optional=).
    assert render.fit([40, 40], [36, 36], 50) == [36, 36]
    widths = render.fit([7, 200, 9, 120, 3], [2, 8, 9, 8, 3], 80)
    assert sum(widths) + 2 * 4 <= 80 and widths[2] == 9


def test_optional_columns_are_left_out_only_when_the_rest_cannot_fit() -> None:
    wide = render.executions_table(rows(), 120).splitlines()[0].split()
    narrow = render.executions_table(rows(), 80).splitlines()[0].split()
    assert "SCHEDULE" in wide and "CREATED_AT" in wide
    assert narrow[:2] == ["ID", "KIND"] and "SCHEDULE" not in narrow


def test_multi_line_values_are_one_line_in_a_table() -> None:
    table = render.table([{"error": "Traceback\n  line 1\n  line 2"}], ("error",), width=80)
    assert table.splitlines()[1] == "Traceback line 1 line 2"


def test_terminal_width_is_kept_between_80_and_120(monkeypatch: pytest.MonkeyPatch) -> None:
    for columns, expected in (("40", 80), ("100", 100), ("300", 120)):
        monkeypatch.setenv("COLUMNS", columns)
        assert render.terminal_width() == expected


def test_a_pipe_is_not_fitted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert render.output_width() is None
    read, write = os.pipe()
    with os.fdopen(write, "w") as piped:
        monkeypatch.setattr("sys.stdout", piped)
        assert render.output_width() is None
    os.close(read)


def test_durations_read_as_a_person_would() -> None:
    assert render.duration(None) is None
    assert render.duration(0.251) == "0.25s"
    assert render.duration(42.9) == "42s"
    assert render.duration(185) == "3m05s"
    assert render.duration(7380) == "2h03m"
    assert render.duration(4 * 86400 + 7200) == "4d02h"


def test_a_flag_reads_yes_or_no_in_a_table() -> None:
    flags = [{"name": "emails", "paused": True}, {"name": "sms", "paused": False}]
    text = render.table(flags, ("name", "paused"))
    assert text.splitlines()[1:] == ["emails  yes", "sms     no"]
