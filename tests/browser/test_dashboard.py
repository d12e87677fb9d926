"""The dashboard in headless Chromium, served by a real `workflows dashboard` process, with a
real worker running the jobs and workflows it shows. Each test drives the page as an operator
would (clicks, confirmations, forms) and checks the database's side of what it did."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Dialog, Page, expect

import workflows
from tests.browser import dash_app
from tests.browser.conftest import Dashboards, screenshot, wait_until
from workflows import executions
from workflows.testing import export_history_sync, replay

LIVE = 15_000  # ms: a live region refreshes every 2 s; room for a loaded machine


def _status(execution_id: str) -> str:
    return str(workflows.get_status_sync(execution_id)["status"])


def _accept(page: Page, seen: list[str]) -> None:
    def on_dialog(dialog: Dialog) -> None:
        seen.append(dialog.message)
        dialog.accept()

    page.once("dialog", on_dialog)


def _failed_job(flags: Path, tag: str) -> str:
    job_id = dash_app.flaky.queue_sync(tag)
    wait_until(lambda: _status(job_id) == "failed", "the job to fail")
    return job_id


def test_overview_shows_each_queue_and_each_worker_live(
    dashboards: Dashboards, worker: subprocess.Popen[bytes], page: Page, flags: Path
) -> None:
    url = dashboards.start()
    page.goto(url + "/")
    row = page.locator('tr[data-queue="dash"]')
    expect(row).to_be_visible()
    (me,) = workflows.workers.list_sync()
    worker_row = page.locator(f'tr[data-worker="{me["worker_id"]}"]')
    expect(worker_row).to_contain_text(me["hostname"])
    expect(worker_row).to_contain_text(dash_app.QUEUE)

    # Live: work done after the page loaded shows without a reload.
    for i in range(3):
        (flags / f"ok{i}").touch()
        job_id = dash_app.flaky.queue_sync(f"ok{i}")
        wait_until(lambda job_id=job_id: _status(job_id) == "completed", "a job to complete")
    _failed_job(flags, "bad")
    completed = row.locator("td").nth(6)
    failed = row.locator("td").nth(7)
    expect(completed).to_have_text("3", timeout=LIVE)
    expect(failed).to_have_text("1", timeout=LIVE)
    # The chart has a bar for this minute's ends.
    expect(row.locator("svg.chart rect.done")).not_to_have_count(0)
    expect(row.locator("svg.chart rect.bad")).not_to_have_count(0)
    # What the worker runs now, by name, linked to its page.
    held = [dash_app.hold.queue_sync(f"h{i}") for i in range(2)]
    expect(worker_row.locator("td.running a")).to_have_count(2, timeout=LIVE)
    expect(worker_row.locator("td.running")).to_contain_text("dash_app:hold")
    expect(row.locator("td").nth(2)).to_have_text("2")
    screenshot(page, "dashboard-overview.png")
    for i, job_id in enumerate(held):
        (flags / f"release-h{i}").touch()
        wait_until(lambda job_id=job_id: _status(job_id) == "completed", "a held job to end")
    expect(worker_row.locator("td.running a")).to_have_count(0, timeout=LIVE)


def test_a_failed_job_is_retried_from_its_page_and_completes(
    dashboards: Dashboards, worker: subprocess.Popen[bytes], page: Page, flags: Path
) -> None:
    job_id = _failed_job(flags, "fixme")
    url = dashboards.start()
    page.goto(f"{url}/executions/{job_id}")
    expect(page.locator("#execution .status").first).to_have_text("failed")
    expect(page.locator(".error-type")).to_have_text("ValueError")
    expect(page.locator(".error-message")).to_contain_text("the flag is not set yet")
    expect(page.locator("pre.traceback")).to_contain_text("Traceback")

    (flags / "fixme").touch()
    seen: list[str] = []
    _accept(page, seen)
    page.get_by_role("button", name="Retry").click()
    expect(page.locator(".notice")).to_contain_text("Retried")
    assert seen and "again" in seen[0]
    expect(page.locator("#execution .status").first).to_have_text("completed", timeout=LIVE)
    expect(page.locator("pre.result")).to_contain_text("fixme: fixed")
    assert _status(job_id) == "completed"
    # Nothing more to retry or cancel.
    expect(page.get_by_role("button", name="Retry")).to_have_count(0)
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)


def test_a_workflow_waiting_for_a_signal_gets_it_from_the_page_and_its_timeline_shows_each_step(
    dashboards: Dashboards, worker: subprocess.Popen[bytes], page: Page, flags: Path
) -> None:
    workflow_id = dash_app.approval.queue_sync("o-17")
    wait_until(
        lambda: (
            workflows.get_status_sync(workflow_id)["status"] == "waiting"
            and any(s["kind"] == "signal" for s in executions.history_sync(workflow_id)["steps"])
        ),
        "the workflow to wait for its signal",
    )
    url = dashboards.start()
    page.goto(f"{url}/executions/{workflow_id}")
    expect(page.locator("#execution .status").first).to_have_text("waiting")
    bars = page.locator("table.timeline svg.lane rect.bar")
    expect(bars).to_have_count(dash_app.APPROVAL_BARS)
    # reserve failed once before it succeeded: marked on its bar and in its row.
    reserve = page.locator("table.timeline tr.k-activity", has_text="reserve")
    expect(reserve.locator("rect.failed-attempt")).to_have_count(1)
    expect(reserve).to_contain_text("1 failed")
    expect(page.locator("table.markers tr.marker")).to_contain_text("notify_customer")

    # A payload that is not JSON is refused before anything is sent.
    page.fill("form.signal input[name=name]", "approved")
    page.fill("form.signal textarea[name=payload]", "{approved: yes")
    page.get_by_role("button", name="Send signal").click()
    expect(page.locator("[data-json-error]")).to_contain_text("not JSON")
    assert executions.history_sync(workflow_id)["signals"] == []

    page.fill("form.signal textarea[name=payload]", '{"approved": true, "by": "ops"}')
    seen: list[str] = []
    _accept(page, seen)
    page.get_by_role("button", name="Send signal").click()
    expect(page.locator(".notice")).to_contain_text("Signal sent")
    expect(page.locator("#execution .status").first).to_have_text("completed", timeout=LIVE)
    result = workflows.get_status_sync(workflow_id)["result"]
    assert result["decision"] == {"approved": True, "by": "ops"}
    # After the reload the live region stops (finished): the signal and every bar are there.
    page.reload()
    expect(page.locator("tr.signal-row")).to_contain_text("approved")
    expect(bars).to_have_count(dash_app.APPROVAL_BARS)
    expect(page.locator("table.timeline svg.lane rect.bar.st-failed")).to_have_count(0)
    screenshot(page, "dashboard-timeline.png")

    # The history downloads as the document `workflows history export` writes, which
    # `workflows replay` (and workflows.testing.replay) reads: it replays with today's code.
    with page.expect_download() as download:
        page.get_by_role("link", name="history.json").click()
    saved = Path(download.value.path())
    body = json.loads(saved.read_text())
    exported = export_history_sync(workflow_id)
    assert {k: v for k, v in body.items() if k != "exported_at"} == {
        k: v for k, v in exported.items() if k != "exported_at"
    }
    assert replay(saved, dash_app.approval) is not None


HOSTILE = [
    "<script>alert('script')</script>",
    '<img src=x onerror="alert(1)">',
    '"><svg onload=alert(2)>',
]


def test_hostile_values_render_as_text(
    dashboards: Dashboards, worker: subprocess.Popen[bytes], page: Page
) -> None:
    job_id = dash_app.echo.options(idempotency_key=HOSTILE[1]).queue_sync(HOSTILE)
    wait_until(lambda: _status(job_id) == "completed", "the echo job")
    url = dashboards.start()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    page.goto(f"{url}/executions/{job_id}")
    for text in HOSTILE:
        # Shown as JSON text (quotes escaped the JSON way), in arguments and result.
        shown = json.dumps(text)
        expect(page.locator("pre.args")).to_contain_text(shown)
        expect(page.locator("pre.result")).to_contain_text(shown)
    expect(page.locator("main img")).to_have_count(0)
    expect(page.locator("main script")).to_have_count(0)
    expect(page.locator("main svg[onload]")).to_have_count(0)
    # Found by its idempotency key, itself hostile.
    page.goto(f"{url}/executions?q={urllib.request.quote(HOSTILE[1])}")
    expect(page).to_have_url(re.compile(f"/executions/{job_id}$"))
    page.goto(f"{url}/executions?q={urllib.request.quote(HOSTILE[0])}")
    expect(page.locator("p.message")).to_contain_text(HOSTILE[0])
    page.goto(f"{url}/executions?name={urllib.request.quote(HOSTILE[2])}")
    expect(page.locator("form.filters input[name=name]")).to_have_value(HOSTILE[2])
    page.goto(f"{url}/executions")
    expect(page.locator(f'tr[data-id="{job_id}"]')).to_be_visible()
    assert dialogs == []


def _post(url: str, data: dict[str, str], headers: dict[str, str] | None = None) -> int:
    body = urllib.parse.urlencode(data).encode()
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_read_only_hides_every_action_and_refuses_a_forged_post(
    dashboards: Dashboards, worker: subprocess.Popen[bytes], page: Page, flags: Path
) -> None:
    job_id = _failed_job(flags, "stays-failed")
    workflow_id = dash_app.approval.queue_sync("o-ro")
    wait_until(lambda: _status(workflow_id) == "waiting", "the workflow to wait")
    url = dashboards.start("--read-only")
    page.goto(f"{url}/executions/{job_id}")
    expect(page.locator(".badge.readonly")).to_be_visible()
    expect(page.locator("form[method=post]")).to_have_count(0)
    page.goto(f"{url}/executions/{workflow_id}")
    expect(page.locator("form.signal")).to_have_count(0)
    page.goto(f"{url}/")
    expect(page.locator('tr[data-queue="dash"]')).to_be_visible()
    expect(page.get_by_role("button", name="Pause")).to_have_count(0)

    # A forged POST, with a valid-looking token and cookie, from the page's own context.
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    token = cookies["workflows_csrf"]
    for path, form in [
        (f"/executions/{job_id}/retry", {"csrf": token}),
        (f"/executions/{workflow_id}/signal", {"csrf": token, "name": "approved"}),
        (f"/executions/{workflow_id}/cancel", {"csrf": token}),
        ("/queues/dash/pause", {"csrf": token}),
    ]:
        response = page.request.post(url + path, form=form)
        assert response.status == 403, path
        assert "read-only" in response.text()
    assert _status(job_id) == "failed"
    assert _status(workflow_id) == "waiting"
    assert workflows.queues.get_sync("dash")["paused"] is False


def test_an_action_without_the_forms_token_or_from_another_origin_is_refused(
    dashboards: Dashboards, worker: subprocess.Popen[bytes], page: Page, flags: Path
) -> None:
    job_id = _failed_job(flags, "csrf")
    (flags / "csrf").touch()
    url = dashboards.start()
    page.goto(f"{url}/executions/{job_id}")
    token = {c["name"]: c["value"] for c in page.context.cookies()}["workflows_csrf"]
    retry = f"{url}/executions/{job_id}/retry"
    # No cookie (another site's form cannot send it: SameSite=Strict), no field, a wrong one.
    assert _post(retry, {"csrf": token}) == 403
    assert page.request.post(retry, form={}).status == 403
    assert page.request.post(retry, form={"csrf": token[::-1]}).status == 403
    # The right token, but the browser says the request came from another site.
    assert (
        page.request.post(retry, form={"csrf": token}, headers={"Origin": "https://evil.example"})
    ).status == 403
    assert _status(job_id) == "failed"
    # The page's own form goes through.
    _accept(page, [])
    page.get_by_role("button", name="Retry").click()
    expect(page.locator(".notice")).to_contain_text("Retried")


def _non_loopback_address() -> str | None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            # No packet is sent: this only asks the kernel which address would be used.
            s.connect(("10.255.255.255", 1))
            address = str(s.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_off_loopback_the_token_is_required(
    dashboards: Dashboards, page: Page, browser: Any
) -> None:
    # Refused at start without a token.
    proc = dashboards.command("--host", "0.0.0.0", "--port", "0")
    assert proc.wait(30) == 2
    assert "WORKFLOWS_DASHBOARD_TOKEN" in dashboards.log(proc)

    secret = "s3cret-token-for-the-test"
    url = dashboards.start(host="0.0.0.0", WORKFLOWS_DASHBOARD_TOKEN=secret)
    address = _non_loopback_address()
    targets = [url] + ([url.replace("127.0.0.1", address)] if address else [])
    for base in targets:
        request = urllib.request.Request(base + "/")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401
        assert refused.value.headers["WWW-Authenticate"].startswith("Basic")
        assert secret not in refused.value.read().decode()
        wrong = base64.b64encode(b"ops:not-it").decode()
        request = urllib.request.Request(base + "/", headers={"Authorization": f"Basic {wrong}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401
        request = urllib.request.Request(base + "/", headers={"Authorization": f"Bearer {secret}"})
        with urllib.request.urlopen(request, timeout=10) as ok:
            assert ok.status == 200
            assert secret not in ok.read().decode()
    # The browser without credentials gets nothing; with them, the overview.
    assert page.request.get(targets[-1] + "/").status == 401
    context = browser.new_context(http_credentials={"username": "ops", "password": secret})
    try:
        authed = context.new_page()
        response = authed.goto(targets[-1] + "/")
        assert response is not None and response.status == 200
        expect(authed.get_by_role("heading", name="Queues")).to_be_visible()
        # No page shows where the database is.
        database_url = dashboards.database_url
        for path in ("/", "/executions", "/schedules"):
            authed.goto(targets[-1] + path)
            assert database_url not in authed.content()
    finally:
        context.close()


def test_bad_input_gets_a_page_that_says_what_is_wrong(
    dashboards: Dashboards, worker: subprocess.Popen[bytes], page: Page
) -> None:
    workflow_id = dash_app.approval.queue_sync("o-bad")
    wait_until(lambda: _status(workflow_id) == "waiting", "the workflow to wait")
    url = dashboards.start()
    cases = [
        ("/executions?since=yesterday-ish", 400, "since"),
        ("/executions?status=exploded", 400, "status must be one of"),
        ("/executions?after=not-a-cursor", 400, "after"),
        ("/executions/0000", 404, "0000"),
        ("/executions/not-an-id", 404, "not-an-id"),
        ("/executions/" + "f" * 36 + "/history.json", 404, "error"),
        ("/nowhere", 404, ""),
    ]
    for path, status, text in cases:
        response = page.goto(url + path)
        assert response is not None and response.status == status, path
        assert text in page.content(), path
    page.goto(f"{url}/executions/{workflow_id}")
    token = {c["name"]: c["value"] for c in page.context.cookies()}["workflows_csrf"]
    posts = [
        (f"/executions/{workflow_id}/signal", {"name": "approved", "payload": "{nope"}, 400),
        (f"/executions/{workflow_id}/signal", {"name": "", "payload": "1"}, 400),
        (f"/executions/{workflow_id}/signal", {"name": "approved", "payload": "[" * 100_000}, 400),
        (
            f"/executions/{workflow_id}/signal",
            {"name": "approved", "payload": '"' + "x" * 2_000_000 + '"'},
            400,
        ),
        (f"/executions/{workflow_id}/signal", {"name": "a\x00b", "payload": "1"}, 400),
        (f"/executions/{workflow_id}/explode", {}, 404),
        ("/executions/" + "0" * 32 + "/retry", {}, 404),
        ("/queues/bad queue!/pause", {}, 400),
        ("/schedules/pause/no-such-schedule", {}, 404),
        ("/schedules/explode/reports/nightly", {}, 404),
    ]
    for path, form, status in posts:
        response = page.request.post(url + path, form={"csrf": token, **form})
        assert response.status == status, (path, response.status, response.text()[:300])
    assert _status(workflow_id) == "waiting"
    assert executions.history_sync(workflow_id)["signals"] == []


def test_a_queue_paused_from_the_overview_holds_a_job_cancelled_from_its_page(
    dashboards: Dashboards, worker: subprocess.Popen[bytes], page: Page
) -> None:
    dash_app.echo.queue_sync("first")  # the queue shows once it has had work
    wait_until(lambda: workflows.queues.stats_sync("dash")[0]["completed_5m"] == 1, "a first end")
    url = dashboards.start()
    page.goto(url + "/")
    row = page.locator('tr[data-queue="dash"]')
    seen: list[str] = []
    _accept(page, seen)
    row.get_by_role("button", name="Pause").click()
    expect(page.locator(".notice")).to_contain_text("Queue paused")
    assert "Pause queue dash?" in seen[0]
    assert workflows.queues.get_sync("dash")["paused"] is True
    expect(row.locator(".badge.paused")).to_be_visible()

    job_id = dash_app.echo.queue_sync("held back")
    page.goto(f"{url}/executions/{job_id}")
    expect(page.locator(".waiting")).to_contain_text("queue dash is paused")
    _accept(page, seen)
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator(".notice")).to_contain_text("Cancelled")
    expect(page.locator("#execution .status").first).to_have_text("cancelled")
    assert _status(job_id) == "cancelled"
    expect(page.get_by_role("button", name="Retry")).to_be_visible()

    page.goto(url + "/")
    _accept(page, seen)
    row.get_by_role("button", name="Resume").click()
    expect(page.locator(".notice")).to_contain_text("Queue resumed")
    assert workflows.queues.get_sync("dash")["paused"] is False
    after = dash_app.echo.queue_sync("after")
    wait_until(lambda: _status(after) == "completed", "a job after the resume")


def test_schedules_show_their_next_fire_and_pause_from_the_page(
    dashboards: Dashboards, page: Page
) -> None:
    workflows.schedules.create_sync("reports/nightly:v1", dash_app.echo, "0 3 * * *", ["r"])
    url = dashboards.start()
    page.goto(url + "/schedules")
    row = page.locator('tr[data-schedule="reports/nightly:v1"]')
    expect(row).to_contain_text("0 3 * * *")
    (schedule,) = workflows.schedules.list_sync()
    assert schedule["next_tick"].endswith("03:00:00+00:00")
    expect(row).to_contain_text(schedule["next_tick"][:10] + " 03:00:00")
    _accept(page, [])
    row.get_by_role("button", name="Pause").click()
    expect(page.locator(".notice")).to_contain_text("Schedule paused")
    expect(row.locator(".badge.paused")).to_be_visible()
    assert workflows.schedules.list_sync()[0]["paused"] is True
    _accept(page, [])
    row.get_by_role("button", name="Resume").click()
    expect(page.locator(".notice")).to_contain_text("Schedule resumed")
    assert workflows.schedules.list_sync()[0]["paused"] is False
