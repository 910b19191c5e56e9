"""The MLflow UI as a training user sees it, in a real browser (Debian's chromium, driven by selenium through
chromium-driver): a sweep's printed link, the nested runs table, readable regime names, the Dataset column,
the sweep's description, one run's metric charts, and the report's summary run (the mean over seeds) charted.

Runs in a network namespace with loopback only (the `loopback_only` marker), so nothing the browser or the
server tries can leave the machine. With HARNESS_UI_SCREENSHOTS=<folder> it also saves the screenshots the
README shows (`mlflow_runs_table.png`, `mlflow_run_curves.png`) there.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import run_cli, tiny_job
from servers import HOST, mlflow_ui

from harness import data

pytestmark = [pytest.mark.loopback_only, pytest.mark.slow]

WAIT_S = 60  # every wait on the React app is bounded by this
# MLflow 3.17's UI picks between its two views from this query parameter (else from the browser's remembered
# choice, GenAI for a new user), not from the experiment's `mlflow.experimentKind` tag
MODEL_TRAINING = "workflowType=machine_learning"


@pytest.fixture(scope="session")
def browser_binaries() -> tuple[str, str]:
    """Debian's chromium and chromedriver (CI installs both: apt-get install chromium chromium-driver)."""
    pytest.importorskip("selenium", reason="selenium absent (pip install -e '.[dev]')")
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver") if os.access(p, os.X_OK)), None
    )
    if browser is None or driver is None:
        pytest.skip("chromium or chromedriver absent (Debian: apt-get install -y chromium chromium-driver)")
    return browser, driver


@contextmanager
def chromium(browser: str, driver: str) -> Iterator:
    """Headless chromium at a fixed window size with a fresh profile (what a new user's browser remembers)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1600,1000",
        "--no-first-run", "--no-default-browser-check", "--disable-background-networking", "--disable-sync",
        "--disable-component-update",
    ):  # fmt: skip
        options.add_argument(arg)
    session = webdriver.Chrome(options=options, service=Service(driver))
    session.set_page_load_timeout(WAIT_S)
    try:
        yield session
    finally:
        session.quit()


def wait(driver, condition, what: str):
    """WebDriverWait for `condition(driver)` to be truthy, with the page's text in the failure."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.3).until(condition)
    except TimeoutException:
        text = driver.execute_script("return document.body ? document.body.innerText : ''")
        raise AssertionError(
            f"{what}: not within {WAIT_S} s at {driver.current_url}\npage text:\n{text[:3000]}"
        ) from None


# The runs table is an ag-grid: the Run Name column is pinned left and the others sit in another container,
# so cells are matched by the row's row-index. A nested run's name cell is indented by a spacer of width 24 px
# per level (a parent's spacer holds its expander button).
ROWS_JS = """
const out = [];
for (const cell of document.querySelectorAll('.ag-row [col-id="attributes.`Run Name`"]')) {
  const link = cell.querySelector('a[href*="/runs/"]');
  if (!link) continue;
  const row = cell.closest('.ag-row');
  const index = row.getAttribute('row-index');
  const spacer = cell.querySelector('div[style*="width"]');
  const dataset = document.querySelector(`.ag-row[row-index="${index}"] [col-id="attributes.\\`Dataset\\`"]`);
  out.push({
    index: Number(index),
    run_id: link.getAttribute('href').split('/runs/')[1].split(/[/?]/)[0],
    name: link.textContent.trim(),
    indent: spacer ? parseFloat(spacer.style.width) : 0,
    dataset: dataset ? dataset.innerText.trim() : null,
  });
}
return out.sort((a, b) => a.index - b.index);
"""


def table_rows(driver) -> list[dict]:
    return driver.execute_script(ROWS_JS)


def expand_all(driver, children: dict[str, list[str]]) -> list[dict]:
    """Click the expander of every shown parent row whose children are not shown, until none is left."""
    from selenium.webdriver.common.by import By

    for _ in range(10):
        rows = table_rows(driver)
        shown = {r["run_id"] for r in rows}
        collapsed = [r for r in rows if children.get(r["run_id"]) and not shown & set(children[r["run_id"]])]
        if not collapsed:
            return rows
        row = collapsed[0]
        cell = driver.find_element(
            By.CSS_SELECTOR, f'.ag-row[row-index="{row["index"]}"] [col-id="attributes.`Run Name`"]'
        )
        cell.find_element(By.CSS_SELECTOR, "button").click()
        wanted = children[row["run_id"]]
        wait(driver, lambda d, wanted=wanted: row_shown(d, wanted), f"child rows of {row['name']!r}")
    raise AssertionError(f"runs table still has collapsed parents after 10 clicks: {table_rows(driver)}")


def row_shown(driver, run_ids: list[str]) -> bool:
    return any(r["run_id"] in run_ids for r in table_rows(driver))


def close_assistant(driver) -> None:
    """MLflow's assistant side panel opens on a first visit; it covers a third of a screenshot."""
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):
        if button.is_displayed():
            button.click()
    time.sleep(0.5)


def with_query(url: str, query: str) -> str:
    """`query` added to the query of a hash route (`.../#/experiments/1` -> `.../#/experiments/1?query`)."""
    return url + ("&" if "?" in url.split("#", 1)[-1] else "?") + query


def route(url: str) -> str:
    """The hash route without its query: `/experiments/1/runs`."""
    return url.split("#", 1)[-1].split("?", 1)[0]


def test_the_ui_shows_a_sweep_as_nested_training_runs_with_names_datasets_description_and_curves(
    tmp_path, store, browser_binaries
):
    import mlflow
    from selenium.webdriver.common.by import By

    photos = data.ensure_synthetic(tmp_path / "gen", {"train": 6, "validation": 3, "test": 3})
    job = [o for o in tiny_job(store, photos) if not o.startswith("epochs.head=")]
    proc = run_cli("-m", "seed=0,1", *job, "epochs.head=4", "head_lr=1e-2", cwd=tmp_path)
    assert proc.returncode == 0, proc.log[-4000:]

    # what the sweep prints last: the `mlflow ui` command for its store, then the URL of the study
    hint = re.search(r"browse the runs: (mlflow ui .+)\n\s*then open (http://\S+)", proc.log)
    assert hint, proc.log[-3000:]
    command, printed_url = shlex.split(hint.group(1)), hint.group(2)
    assert command[:2] == ["mlflow", "ui"] and "--backend-store-uri" in command, command
    assert urlsplit(printed_url).netloc == "127.0.0.1:5000", printed_url  # mlflow ui's default address

    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(search_all_experiments=True)
    tag = lambda name: runs.get(f"tags.{name}", [None] * len(runs))  # noqa: E731
    kind = dict(zip(runs.run_id, tag("run_kind"), strict=True))
    parent = {r: p for r, p in zip(runs.run_id, tag("mlflow.parentRunId"), strict=True) if isinstance(p, str)}
    children: dict[str, list[str]] = {}
    for run_id, parent_id in parent.items():
        children.setdefault(parent_id, []).append(run_id)
    (sweep,) = [r for r, k in kind.items() if k == "sweep"]
    jobs = [r for r, k in kind.items() if k == "job"]
    regimes = [r for r, k in kind.items() if k == "regime"]
    assert (
        len(jobs) == 2
        and len(regimes) == 2
        and set(runs.experiment_id) == {re.search(r"#/experiments/(\d+)", printed_url).group(1)}
    )

    problems = []
    shots = os.environ.get("HARNESS_UI_SCREENSHOTS")
    with mlflow_ui(*command[2:]) as base, chromium(*browser_binaries) as driver:
        url = printed_url.replace("http://127.0.0.1:5000", base)
        assert base.startswith(f"http://{HOST}:")

        # 1. the printed URL, in a browser that remembers nothing, lands on the training runs table
        driver.get(url)
        wait(driver, lambda d: re.fullmatch(r"/experiments/\d+/\S+", route(d.current_url)), "a tab of the study")
        landed = route(driver.current_url)
        if not landed.endswith("/runs"):
            problems.append(
                f"the printed URL {printed_url} lands on {landed!r} ({driver.current_url}), not on the training "
                f"runs table: MLflow 3.17's UI needs ?{MODEL_TRAINING} in it"
            )
            driver.get(with_query(url, MODEL_TRAINING))
            wait(driver, lambda d: route(d.current_url).endswith("/runs"), "the runs table")

        # 2. the runs table shows sweep -> job -> regime, nested
        wait(driver, table_rows, "rows in the runs table")
        rows = expand_all(driver, children)
        assert {r["run_id"] for r in rows} == set(kind), rows
        indent = {r["run_id"]: r["indent"] for r in rows}
        order = [r["run_id"] for r in rows]
        levels = sorted(set(indent.values()))
        assert len(levels) == 3, f"expected three nesting levels (sweep, job, regime): {rows}"
        depth = {r: levels.index(i) for r, i in indent.items()}
        assert depth[sweep] == 0 and {depth[j] for j in jobs} == {1} and {depth[r] for r in regimes} == {2}, rows
        for run_id, parent_id in parent.items():  # each run shown under its own parent, nearest shallower row above
            above = [r for r in order[: order.index(run_id)] if depth[r] < depth[run_id]]
            assert above and above[-1] == parent_id, f"{run_id} not under its parent {parent_id}: {rows}"

        # 3. regime runs have readable names
        names = {r["run_id"]: r["name"] for r in rows}
        for run_id in regimes:
            assert re.fullmatch(r"frozen mobilenetv2 head_lr=0\.01 seed=[01]", names[run_id]), names[run_id]
        assert {names[r][-1] for r in regimes} == {"0", "1"}

        # 4. the Dataset column shows what each job logged with mlflow.log_input: train, and the other two
        for run in (r for r in rows if r["run_id"] in jobs):
            assert run["dataset"] and run["dataset"].startswith(f"{photos.name}/train"), run
            assert "+2" in run["dataset"], run

        if shots:
            close_assistant(driver)
            widen_run_names(driver)
            Path(shots).mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(Path(shots) / "mlflow_runs_table.png"))

        # 5. the sweep run's description is the command that started it
        experiment = runs.experiment_id[0]
        driver.get(with_query(f"{base}/#/experiments/{experiment}/runs/{sweep}", MODEL_TRAINING))
        note = wait(driver, note_text, "the sweep run's description")
        command_tag = runs.loc[runs.run_id == sweep, "tags.command"].item()
        assert command_tag.startswith("python -m harness -m seed=0,1 ") and command_tag in note, note
        assert "started with" in note, note

        # 6. a regime run's metric charts: the per-epoch curves
        regime = sorted(regimes, key=lambda r: names[r])[0]
        driver.get(with_query(f"{base}/#/experiments/{experiment}/runs/{regime}/model-metrics", MODEL_TRAINING))
        search = wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "input[placeholder*='metric charts']"), "")
        search[0].send_keys("val_")  # the validation curves only (the cards below the fold are not drawn)
        for metric in ("val_acc", "val_loss"):
            wait(driver, lambda d, m=metric: chart_titled(d, m), f"the {metric} chart of {names[regime]!r}")
        if shots:
            close_assistant(driver)
            time.sleep(2)  # plotly draws after the titles
            driver.save_screenshot(str(Path(shots) / "mlflow_run_curves.png"))

        # 7. the report's aggregates over seeds, as summary runs nested under a report run: the UI charts them
        from harness import report

        result = report.build_report(store, "default", out=tmp_path / "report", log_to_parent=False)
        summaries = mlflow.search_runs(experiment_ids=[experiment], filter_string="tags.run_kind = 'summary'")
        assert len(summaries) == 1 and summaries["tags.mlflow.parentRunId"].item() == result.summary["summary_run"]
        summary = summaries.run_id.item()
        driver.get(with_query(f"{base}/#/experiments/{experiment}/runs/{summary}/model-metrics", MODEL_TRAINING))
        search = wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "input[placeholder*='metric charts']"), "")
        search[0].send_keys("frozen_test_acc")
        wait(driver, lambda d: chart_titled(d, "frozen_test_acc_mean"), "the summary run's mean over seeds")

    assert not problems, "\n".join(problems)


def note_text(driver) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, "[data-testid='note-editor-preview-content']")
    return found[0].text if found and found[0].text.strip() else ""


def chart_titled(driver, metric: str) -> bool:
    """A metric chart card titled `metric` with a drawn plotly line or bar in it."""
    return driver.execute_script(
        """const [metric] = arguments;
        return [...document.querySelectorAll('[data-testid="experiment-view-compare-runs-card"]')].some(card =>
          card.querySelector(`h4[title="${metric}"]`) && card.querySelector('svg.main-svg .trace'));""",
        metric,
    )


def widen_run_names(driver) -> None:
    """Drag the Run Name column's edge so the names read in full in the screenshot."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    handle = driver.find_element(
        By.CSS_SELECTOR, '.ag-header-cell[col-id="attributes.`Run Name`"] .ag-header-cell-resize'
    )
    ActionChains(driver).click_and_hold(handle).move_by_offset(230, 0).release().perform()
    time.sleep(1)
