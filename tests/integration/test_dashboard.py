"""`cartflow dashboard` in a real headless browser over a real stack.

The embedded stack (MiniStack process, every function, the spark-runner with real Spark +
Delta) processes fixtures/valid, then fixtures/invalid; the dashboard runs as its own
process (the CLI command); Debian's chromium, driven by Selenium through Debian's
chromium-driver, loads the page once and waits for it to refresh itself. The values read
from the rendered DOM (the SVG marks' data attributes and the tables next to the charts)
are compared with tests/oracle.py, never with what the pipeline wrote.

Needs: apt-get install chromium chromium-driver (fails under CI=true without them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from cartflow.local.emulator import free_port
from cartflow.local.stack import EmbeddedStack, settings_env
from cartflow.ops.views import batches, files, is_settled, upload_dir
from tests.conftest import FIXTURES, REPO, require
from tests.oracle import batch_from_dir, expected_table_state

pytestmark = pytest.mark.integration
SCREENSHOT = REPO / ".cache" / "dashboard.png"
SETTLE = 600  # seconds a batch gets (a loaded 2-core box took 280 s to validate fixtures/valid)
WAIT = 120  # seconds the page gets to show what the tables hold (it polls every second)


@pytest.fixture(scope="module")
def settings(settings):  # type: ignore[no-untyped-def]
    # A fixture folder is uploaded file by file: a window wider than the upload keeps it one batch.
    return settings.model_copy(update={"debounce_seconds": 5, "max_quarantined_share": 0.9})


@pytest.fixture(scope="module")
def stack(settings, stack_resources, deps):  # type: ignore[no-untyped-def]
    with EmbeddedStack(settings) as s:
        yield s


@pytest.fixture(scope="module")
def dashboard_url(settings, stack, tmp_path_factory) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """`cartflow dashboard` as its own process on a free port, like a user (or the container) runs it."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("dashboard") / "dashboard.log"
    env = {**os.environ, **settings_env(stack.settings), "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cartflow", "dashboard", "--port", str(port), "--refresh", "1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}/"
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, log_path.read_text()
                try:
                    with urllib.request.urlopen(url + "healthz", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                assert time.monotonic() < deadline, f"dashboard not up after 60 s: {log_path.read_text()}"
                time.sleep(0.3)
            yield url
        finally:
            proc.terminate()  # SIGTERM: the server closes its socket and exits 0
            code = proc.wait(20)
    assert code == 0, log_path.read_text()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    require(
        chromium is not None and driver_path is not None, "no chromium/chromedriver: apt-get install chromium chromium-driver"
    )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        require(False, "selenium is not installed (the test extra)")
        raise
    options = Options()
    options.binary_location = str(chromium)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,3400"):
        options.add_argument(arg)
    # The driver by path: Selenium Manager never runs, nothing is downloaded.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(driver_path)))
    try:
        yield driver
    finally:
        driver.quit()


def settle(deps, stack, n_files: int, timeout: float = SETTLE) -> None:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        stack.check_alive()
        if is_settled(deps, n_files):
            return
        time.sleep(0.5)
    raise AssertionError(f"not settled after {timeout}s: {[(f.s3_path, f.state) for f in files(deps)]}")


def wait_for(browser: Any, what: str, condition: Any, timeout: float = WAIT) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.5).until(condition, message=what)


# ----------------------------------------------------------------------------- reading the DOM


def css(browser: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(browser.find_elements(By.CSS_SELECTOR, selector))


def dom_state(browser: Any) -> dict[str, Any]:
    """Everything the test compares, read in ONE script so a refresh cannot land mid-read."""
    return browser.execute_script(  # type: ignore[no-any-return]
        """
        const q = (s) => Array.from(document.querySelectorAll(s));
        const attrs = (el) => Object.fromEntries(Array.from(el.attributes).map((a) => [a.name, a.value]));
        const cells = (tr) => Object.fromEntries(
            Array.from(tr.querySelectorAll('td[data-col]')).map((td) => [td.dataset.col, td.dataset.value]));
        return {
          bars: q('#category-revenue-chart rect.bar').map(attrs),
          points: q('#order-kpis circle.point').map(attrs),
          categoryRows: q('#category-kpis-table tbody tr').map((tr) => ({key: [tr.dataset.category, tr.dataset.date], ...cells(tr)})),
          orderRows: q('#order-kpis-table tbody tr').map((tr) => ({date: tr.dataset.date, ...cells(tr)})),
          lanes: q('#batch-timeline-chart g.lane').map(attrs),
          batchRows: q('#batches-table tbody tr').map(attrs),
          fileRows: q('#files-table tbody tr').map((tr) => ({...attrs(tr), text: tr.innerText})),
          delta: (() => { const p = document.getElementById('delta-status'); return p ? attrs(p) : null; })(),
          deltaTables: q('#delta-table tbody tr').map((tr) => ({table: tr.dataset.table, rows: tr.querySelector('[data-value]').dataset.value})),
          polls: document.body.dataset.polls || '0',
        };
        """
    )


def assert_page_equals_oracle(state: dict[str, Any], batches_in_order: list[Any], max_share: float) -> None:
    want_orders, want_cats = expected_table_state(batches_in_order, skip_failed=True, max_quarantined_share=max_share)
    assert want_orders and want_cats

    # the chart: one bar per (category, date), its height's value = the oracle's daily_revenue
    bars = {(b["data-category"], b["data-date"]): Decimal(b["data-value"]) for b in state["bars"]}
    assert bars == {k: v["daily_revenue"] for k, v in want_cats.items()}
    # the table next to it: every attribute
    table = {tuple(r["key"]): r for r in state["categoryRows"]}
    assert set(table) == set(want_cats)
    for k, want in want_cats.items():
        for attr, value in want.items():
            assert Decimal(table[k][attr]) == Decimal(str(value)), (k, attr)

    # order KPIs over time: both line charts and the table
    points = {(p["data-metric"], p["data-date"]): Decimal(p["data-value"]) for p in state["points"]}
    assert points == {
        **{("total_revenue", d): v["total_revenue"] for d, v in want_orders.items()},
        **{("total_orders", d): Decimal(v["total_orders"]) for d, v in want_orders.items()},
    }
    orders = {r["date"]: r for r in state["orderRows"]}
    assert list(orders) == sorted(want_orders)  # over time: oldest first
    for d, want in want_orders.items():
        for attr, value in want.items():
            assert Decimal(orders[d][attr]) == Decimal(str(value)), (d, attr)

    # the Delta kpis/ copy agrees with DynamoDB, and holds as many rows as the oracle expects
    assert state["delta"] is not None and state["delta"]["data-available"] == "true", state["delta"]
    assert state["delta"]["data-agrees"] == "true", state["delta"]
    delta_rows = {t["table"]: int(t["rows"]) for t in state["deltaTables"]}
    assert delta_rows["kpis/order_kpis"] == len(want_orders)
    assert delta_rows["kpis/category_kpis"] == len(want_cats)


# ----------------------------------------------------------------------------- the tests


def test_the_page_refreshes_itself_and_shows_the_oracles_kpis(deps, stack, dashboard_url, browser) -> None:  # type: ignore[no-untyped-def]
    browser.get(dashboard_url)
    assert "cartflow KPIs" in browser.title
    assert css(browser, "#batches p.empty"), "an empty pipeline says so"

    keys = upload_dir(deps, FIXTURES / "valid")
    settle(deps, stack, len(keys))
    [batch] = batches(deps)
    assert batch.status == "done", batch

    # No reload: the page polls and must show the done batch and its KPIs by itself.
    wait_for(
        browser,
        "batch shown as done",
        lambda b: css(b, f'#batches-table tr[data-batch-id="{batch.batch_id}"][data-status="done"]'),
    )
    wait_for(browser, "KPIs charted", lambda b: len(css(b, "#category-revenue-chart rect.bar")) > 0)
    state = dom_state(browser)
    assert int(state["polls"]) >= 1, "the content came from a refresh, not from the first load"

    assert_page_equals_oracle(state, [batch_from_dir(FIXTURES / "valid")], deps.settings.max_quarantined_share)

    # the timeline: one lane, done; the table: a duration and a 0% quarantined share
    assert [(lane["data-batch-id"], lane["data-status"]) for lane in state["lanes"]] == [(batch.batch_id, "done")]
    [row] = state["batchRows"]
    assert float(row["data-duration"]) > 0
    assert float(row["data-quarantined-share"]) == 0.0
    # every uploaded file, archived
    shown = {r["data-key"]: r["data-state"] for r in state["fileRows"]}
    assert shown == dict.fromkeys(keys, "archived")

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000


def test_rejected_files_and_quarantine_reasons_appear_per_file(deps, stack, dashboard_url, browser) -> None:  # type: ignore[no-untyped-def]
    known = len(files(deps))
    keys = upload_dir(deps, FIXTURES / "invalid")
    settle(deps, stack, known + len(keys))
    latest = batches(deps)[-1]
    assert latest.status == "done", latest
    browser.get(dashboard_url)
    wait_for(
        browser,
        "second batch shown",
        lambda b: css(b, f'#batches-table tr[data-batch-id="{latest.batch_id}"][data-status="done"]'),
    )
    state = dom_state(browser)

    rows = {r["data-key"]: r for r in state["fileRows"]}
    semicolon = rows["raw/orders/orders_semicolon.csv"]
    assert semicolon["data-state"] == "rejected"
    assert "wrong delimiter: header splits on ';'" in semicolon["text"]
    # a quarantined file lists its rules with row counts (from the Delta quarantine/ table)
    invalid = rows["raw/orders/orders_invalid.csv"]
    assert invalid["data-state"] == "archived"
    assert " row" in invalid["text"] and ":" in invalid["text"], invalid["text"]
    lane_states = [(lane["data-batch-id"], lane["data-status"]) for lane in state["lanes"]]
    assert lane_states == [(b.batch_id, "done") for b in batches(deps)]
    share = float(next(r for r in state["batchRows"] if r["data-batch-id"] == latest.batch_id)["data-quarantined-share"])
    assert 0 < share <= deps.settings.max_quarantined_share

    assert_page_equals_oracle(
        state, [batch_from_dir(FIXTURES / "valid"), batch_from_dir(FIXTURES / "invalid")], deps.settings.max_quarantined_share
    )
