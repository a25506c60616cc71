"""Screenshots of the MLflow UI on the demo's runs for docs/mlflow-ui.md: taken, never drawn.

Starts `mlflow ui` on a free loopback port against a tracking store (default sqlite:///mlflow.db,
what `make demo` fills), drives headless Chromium (Debian's `chromium`) over the DevTools
protocol, saves PNGs to docs/img/, and stops the browser and the server by their process ids.
The pages: the experiment's runs with the newest demo suite run expanded to its child runs, the
evaluation view comparing the runs' predictions, the experiment's Models tab (every child run's
models with the scores linked to them, per evaluation dataset), one run's overview and its
per-example table.

    apt-get install -y chromium
    python scripts/ui_screenshot.py                  # after make demo
    python scripts/ui_screenshot.py --only models    # one page
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmark.serving import free_port  # noqa: E402

OUT = REPO / "docs" / "img"
WIDTH, HEIGHT = 1400, 900
# MLflow 3's UI opens an experiment on its GenAI pages unless told it is model training.
MODEL_TRAINING = "workflowType=machine_learning"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
PAGES = ("runs", "evaluation", "models", "run", "examples")
# The Models tab's columns shown: the model, its run and registered versions, and these scores of
# each evaluation dataset (all of them do not fit the page).
MODEL_ATTRIBUTES_HIDDEN = ("Status", "Logged from", "Dataset", "Parameters")
MODEL_SCORES_SHOWN = ("bleu", "pass_rate")
MODELS_WIDTH = 2000  # the Models tab is wider than the other pages
CLOSE_ASSISTANT = (
    "(() => { const b = [...document.querySelectorAll('button[aria-label=Close]')];"
    " b.forEach(x => x.click()); return true; })()"
)


class ScreenshotError(RuntimeError):
    """What went wrong, said in one line."""


def demo_runs(tracking_uri: str, experiment: str) -> dict[str, Any]:
    """The experiment id, the newest finished demo suite and its child runs by method."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ScreenshotError(f"no experiment {experiment!r} in {tracking_uri}: run make demo")
    suites = client.search_runs(
        [found.experiment_id],
        "tags.`adaptbench.kind` = 'suite' and tags.preset = 'demo' "
        "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not suites:
        raise ScreenshotError(f"no finished demo suite in {experiment!r}: run make demo")
    children = client.search_runs(
        [found.experiment_id], f"tags.mlflow.parentRunId = '{suites[0].info.run_id}'"
    )
    return {
        "experiment_id": found.experiment_id,
        "suite": suites[0],
        "children": {run.data.tags.get("method", ""): run for run in children},
    }


@contextmanager
def mlflow_ui(tracking_uri: str) -> Iterator[str]:
    """`mlflow ui` on a free loopback port, one worker; its base URL. Stopped on leaving."""
    port = free_port()
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri]
    command += ["-h", "127.0.0.1", "-p", str(port), "--workers", "1"]
    # A session of its own: the server's uvicorn child is stopped with it, by the group's id.
    proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=log, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise ScreenshotError(f"mlflow ui exited: {log.read()[-2000:]}")
            try:
                if requests.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise ScreenshotError("mlflow ui did not answer /health within 180 s")
            time.sleep(0.5)
        yield base
    finally:
        _stop(proc)
        log.close()
        os.unlink(log.name)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


class Browser:
    """Headless Chromium over the DevTools protocol: navigate, run a script, wait, capture."""

    def __init__(self, chromium: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}"]
        command += ["--remote-debugging-port=0", f"--window-size={WIDTH},{HEIGHT}", "about:blank"]
        self.proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        self._id = 0

    async def __aenter__(self) -> Browser:
        import aiohttp

        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise ScreenshotError("chromium did not start (apt-get install -y chromium)")
            await asyncio.sleep(0.2)
        port = port_file.read_text().split()[0]
        self.session = aiohttp.ClientSession()
        async with self.session.get(f"http://127.0.0.1:{port}/json/list") as answer:
            (page,) = [t for t in await answer.json() if t["type"] == "page"]
        self.ws = await self.session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        await self.resize(WIDTH)
        return self

    async def resize(self, width: int) -> None:
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=HEIGHT,
            deviceScaleFactor=1,
            mobile=False,
        )

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()
        await self.session.close()
        _stop(self.proc)
        shutil.rmtree(self.profile, ignore_errors=True)

    async def call(self, method: str, **params: Any) -> dict:
        self._id += 1
        await self.ws.send_json({"id": self._id, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json()
            if message.get("id") == self._id:
                if "error" in message:
                    raise ScreenshotError(f"{method}: {message['error']}")
                return message["result"]

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def wait_for(self, expression: str, what: str, limit_s: float = 90) -> Any:
        """Poll `expression` until it is truthy; an error naming `what` if it never is."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.5)
        raise ScreenshotError(f"the page never showed {what} within {limit_s:.0f} s")

    async def click(self, element: str, what: str) -> None:
        """A real mouse click at the middle of the element `element` (a JS expression) finds:
        menus that open on pointer events ignore a scripted `.click()`."""
        box = await self.wait_for(
            f"(() => {{ const e = {element}; if (!e || e.disabled) return null;"
            " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2];"
            " })()",
            what,
        )
        for kind in ("mousePressed", "mouseReleased"):
            await self.call(
                "Input.dispatchMouseEvent",
                type=kind,
                x=box[0],
                y=box[1],
                button="left",
                clickCount=1,
            )
        await asyncio.sleep(1)

    async def open(self, url: str, ready: str, what: str) -> None:
        await self.call("Page.navigate", url=url)
        await self.wait_for(ready, what)
        await self.evaluate(CLOSE_ASSISTANT)  # the assistant panel hides a third of the page

    async def capture(self, path: Path) -> None:
        await asyncio.sleep(2)  # let charts and fonts settle
        shot = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))
        print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


def _tree_node(title: str) -> str:
    """The Columns menu's tree node titled `title` (a JS expression)."""
    return (
        "[...document.querySelectorAll('.du-bois-light-tree-treenode')].find(n => "
        f"n.querySelector('.du-bois-light-tree-title')?.innerText.trim() === {title!r})"
    )


async def _columns_menu(browser: Browser) -> None:
    """Open the Models tab's Columns menu unless it is open (a click in it may close it)."""
    if not await browser.evaluate("Boolean(document.querySelector('.du-bois-light-tree'))"):
        await browser.click(
            "[...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Columns')",
            "the Models tab's Columns menu",
        )


async def _hide_column(browser: Browser, title: str) -> None:
    await _columns_menu(browser)
    checked = f"{_tree_node(title)}?.querySelector('.du-bois-light-tree-checkbox-checked')"
    if await browser.evaluate(f"Boolean({checked})"):
        await browser.click(checked, f"the {title!r} column's checkbox")


async def models_tab(browser: Browser, base: str, experiment: str, runs: list[Any]) -> None:
    """The Models tab with every run's models and their linked scores, fewer columns, on a
    wider page (the caller sets the width back)."""
    names = sorted({m for run in runs for m in _model_names(run)})
    await browser.resize(MODELS_WIDTH)
    await browser.open(
        f"{base}/#/experiments/{experiment}/models?{MODEL_TRAINING}",
        _rows_with(names),
        f"the logged models {', '.join(names)}",
    )
    # The metric columns are drawn once the assistant's panel no longer narrows the table.
    await browser.wait_for(_rows_with(["-evaluation"]), "the models' evaluation datasets")
    await _columns_menu(browser)
    groups = await browser.evaluate(
        "[...document.querySelectorAll('.du-bois-light-tree-title')].map(t => t.innerText.trim())"
        ".filter(t => t.startsWith('Dataset: '))"
    )
    for group in groups:  # each dataset's metrics: the few shown kept, the others hidden
        await _columns_menu(browser)
        closed = f"{_tree_node(group)}?.querySelector('.du-bois-light-tree-switcher_close')"
        if await browser.evaluate(f"Boolean({closed})"):
            await browser.click(closed, f"the {group!r} group")
        await _hide_scores_but(browser, MODEL_SCORES_SHOWN)
    for title in MODEL_ATTRIBUTES_HIDDEN:
        await _hide_column(browser, title)
    await browser.evaluate(
        "document.body.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape', bubbles: true}))"
    )
    await browser.wait_for(_rows_with([f"/{MODEL_SCORES_SHOWN[0]}"]), "the linked scores")


async def _hide_scores_but(browser: Browser, shown: tuple[str, ...]) -> None:
    """Uncheck every open metric column but `shown`; the menu draws only the nodes in view, so
    it is scrolled down until its end."""
    holder = "document.querySelector('.du-bois-light-tree-list-holder')"
    while True:
        await _columns_menu(browser)
        leaves = await browser.evaluate(
            "[...document.querySelectorAll('.du-bois-light-tree-treenode-checkbox-checked "
            ".du-bois-light-tree-title')].map(t => t.innerText.trim()).filter(t => t.includes('/'))"
        )
        hidden = [leaf for leaf in leaves if leaf.rsplit("/", 1)[-1] not in shown]
        for leaf in hidden:
            await _hide_column(browser, leaf)
        if hidden:
            continue
        at_end = await browser.evaluate(
            f"(() => {{ const h = {holder}; if (!h || h.scrollTop + h.clientHeight >= "
            "h.scrollHeight - 1) return true; h.scrollTop += h.clientHeight / 2; return false; })()"
        )
        if at_end:
            return
        await asyncio.sleep(0.5)


def _model_names(run: Any) -> list[str]:
    from core import record as rec

    return [f"{lang}_model" for lang in rec.languages(run.data.params)]


def _text_shown(text: str) -> str:
    return f"document.body && document.body.innerText.includes({text!r})"


def _rows_with(names: list[str]) -> str:
    checks = " && ".join(f"t.includes({n!r})" for n in names)
    return (
        f"(() => {{ const t = document.body ? document.body.innerText : ''; return {checks}; }})()"
    )


async def take(
    base: str, runs: dict[str, Any], out: Path, chromium: str, only: tuple[str, ...] = PAGES
) -> None:
    """The screenshots of docs/mlflow-ui.md (those of `only`)."""
    experiment = runs["experiment_id"]
    suite = runs["suite"]
    children = runs["children"]
    names = sorted(run.info.run_name for run in children.values())
    example = children.get("lora") or next(iter(children.values()))
    run_page = f"{base}/#/experiments/{experiment}/runs/{example.info.run_id}"
    async with Browser(chromium) as browser:
        if "models" in only:
            await models_tab(browser, base, experiment, list(children.values()))
            await browser.capture(out / "mlflow-models.png")
            await browser.resize(WIDTH)
        if not {"runs", "evaluation"} & set(only):
            await _run_pages(browser, run_page, out, only)
            return
        await browser.open(
            f"{base}/#/experiments/{experiment}?{MODEL_TRAINING}",
            _text_shown(suite.info.run_name),
            f"the suite run {suite.info.run_name!r}",
        )
        suite_row = (
            "[...document.querySelectorAll('[role=row]')]"
            f".find(r => r.innerText.includes({suite.info.run_name!r}))"
        )
        expander = f"{suite_row}?.querySelector('button[data-component-id*=runnamecellrenderer]')"
        await browser.wait_for(f"Boolean({expander})", "the suite run's expander")
        await browser.evaluate(f"{expander}.click()")  # once: a second click folds it again
        await browser.wait_for(_rows_with(names), "the suite's child runs")
        if "runs" in only:
            await browser.capture(out / "mlflow-runs.png")

        # The evaluation view: the runs' per-example tables side by side, the suite run (which
        # has none) hidden, each run's predictions in the compared column.
        await browser.evaluate("document.querySelector('input[value=ARTIFACT]').click()")
        visible = f"{suite_row}?.querySelector('input.is-visibility-toggle-checkbox')"
        await browser.wait_for(f"{visible}?.checked", "the suite run's visibility switch")
        await browser.evaluate(f"{visible}.click()")
        await browser.wait_for(f"{visible}?.checked === false", "the suite run hidden")
        await browser.click(
            "[...document.querySelectorAll('button[role=combobox]')]"
            ".find(b => b.innerText.startsWith('Compare'))",
            "the evaluation view's Compare menu",
        )
        await browser.click(
            "[...document.querySelectorAll('[role=option]')]"
            ".find(o => o.innerText.trim() === 'prediction')",
            "the 'prediction' column in the Compare menu",
        )
        await browser.evaluate(
            "document.body.dispatchEvent(new KeyboardEvent('keydown', "
            "{key: 'Escape', bubbles: true}))"
        )
        if "evaluation" in only:
            await browser.capture(out / "mlflow-evaluation.png")
        await _run_pages(browser, run_page, out, only)


async def _run_pages(browser: Browser, run_page: str, out: Path, only: tuple[str, ...]) -> None:
    if "run" in only:
        await browser.open(
            f"{run_page}?{MODEL_TRAINING}", _text_shown("Logged models"), "the run's overview"
        )
        await browser.capture(out / "mlflow-run.png")
    if "examples" in only:
        await browser.open(
            f"{run_page}/artifacts/eval/generation/python_examples.json?{MODEL_TRAINING}",
            _text_shown("prediction"),
            "the per-example table",
        )
        await browser.capture(out / "mlflow-examples.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
        help="store with the demo suite (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    parser.add_argument("--experiment", default="adaptbench")
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the PNGs")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument(
        "--only",
        default=",".join(PAGES),
        help=f"comma-separated pages to take (default all: {','.join(PAGES)})",
    )
    args = parser.parse_args(argv)
    only = tuple(page.strip() for page in args.only.split(",") if page.strip())
    unknown = sorted(set(only) - set(PAGES))
    if unknown:
        parser.error(f"--only: unknown page(s) {', '.join(unknown)}; known: {', '.join(PAGES)}")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    if args.tracking_uri.startswith("sqlite:///") and not args.tracking_uri.startswith(
        "sqlite:////"
    ):  # relative to where the command runs; the server runs in the repository
        relative = args.tracking_uri.removeprefix("sqlite:///")
        args.tracking_uri = f"sqlite:///{Path(relative).resolve()}"
    try:
        runs = demo_runs(args.tracking_uri, args.experiment)
        args.out.mkdir(parents=True, exist_ok=True)
        with mlflow_ui(args.tracking_uri) as base:
            asyncio.run(take(base, runs, args.out.resolve(), args.chromium, only))
    except ScreenshotError as err:
        print(f"ui_screenshot: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
