"""The report in a real browser: headless Chromium loads ``index.html`` from disk, offline.

Chromium is driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``: no port,
no extra package): the test sees every console message and uncaught exception, asks the page whether
each image decoded (``naturalWidth > 0``), reads the visible text, and takes a screenshot that must
not be blank. The harness itself is checked first on a page with a broken image and a throwing script.

Needs Debian's ``chromium`` (``.ci/run`` installs it when missing); skipped, saying so, without it.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
import pytest

from .report_store import FAILED_LABEL

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH: install Debian's package (apt-get install -y chromium; .ci/run "
                             "does this when apt is available) to check the report in a browser")


@dataclass
class Visit:
    """What one page load showed: console errors and exceptions, each image's decoded size, the
    visible text and a PNG screenshot."""

    errors: list[str] = field(default_factory=list)
    images: list[tuple[bool, int, int]] = field(default_factory=list)
    text: str = ""
    screenshot: bytes = b""


class DevTools:
    """A headless Chromium driven over ``--remote-debugging-pipe``: JSON messages, each ended by a
    NUL byte, written to the browser's fd 3 and read from its fd 4."""

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="chromium-report-")  # a fresh profile: no state from other runs
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        # out of the way of 3 and 4, which the child's ends must become
        child_in = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
        child_out = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
        os.close(to_browser_r)
        os.close(from_browser_w)

        def wire() -> None:
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--remote-debugging-pipe",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--window-size=1200,3000",
             f"--user-data-dir={self.profile}",
             "about:blank"],
            preexec_fn=wire, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        os.close(child_in)
        os.close(child_out)
        self.write_fd, self.read_fd = to_browser_w, from_browser_r
        self.buffer = b""
        self.events: list[dict] = []
        self.next_id = 0

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.read_fd], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium closed the pipe: {self.proc.stderr.read().decode(errors='replace')[-2000:]}")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Run one command and return its result; events that arrive meanwhile are kept."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._message(deadline)
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
            self.events.append(answer)

    def wait_for(self, method: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            found = next((e for e in self.events if e.get("method") == method), None)
            if found:
                return found
            self.events.append(self._message(deadline))

    def visit(self, url: str) -> Visit:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        self.events.clear()
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired")

        def evaluate(expression: str):
            return self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                             session=session)["result"]["value"]

        visit = Visit()
        visit.images = [tuple(i) for i in evaluate(
            "Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")]
        visit.text = evaluate("document.body.innerText")
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=session)
        visit.screenshot = base64.b64decode(shot["data"])
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                visit.errors.append(json.dumps(params["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                visit.errors.append(json.dumps(params.get("args"))[:500])
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                visit.errors.append(f"{params['entry'].get('source')}: {params['entry'].get('text')}")
        return visit

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except Exception:  # noqa: BLE001 - it may close the pipe before answering
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.write_fd)
        os.close(self.read_fd)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    chrome = DevTools()
    try:
        yield chrome
    finally:
        chrome.close()


def not_blank(png: bytes) -> tuple[int, float]:
    """(distinct colours, fraction of pixels that are not white) of a screenshot."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    # one integer per pixel: np.unique over RGB rows of a full-page screenshot took 18 s
    packed = (pixels[..., 0].astype(np.uint32) << 16) | (pixels[..., 1].astype(np.uint32) << 8) | pixels[..., 2]
    colours = int(np.count_nonzero(np.bincount(packed.ravel(), minlength=1 << 24)))
    return colours, float((pixels.min(axis=2) < 245).mean())


def test_the_harness_sees_console_errors_and_broken_images(browser, tmp_path):
    """A check that could not fail proves nothing: a throwing script and an undecodable image show."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><p>x</p><img src="data:image/png;base64,AAAA">'
                    '<script>console.error("bad"); throw new Error("boom")</script></body></html>')
    visit = browser.visit(page.as_uri())
    assert any("boom" in e for e in visit.errors) and any("bad" in e for e in visit.errors), visit.errors
    assert visit.images == [(True, 0, 0)]


def test_the_report_loads_cleanly_and_every_figure_renders(browser, paper_report, tmp_path):
    out, _, _ = paper_report  # `ssl-st report` on tests/report_store.py's store, as a user runs it
    n_figures = len(list((out / "figures").glob("*.png")))

    visit = browser.visit((out / "index.html").as_uri())

    assert visit.errors == []
    assert len(visit.images) == n_figures >= 8  # with a confusion matrix, a domain map and a UMAP
    assert all(complete and width > 100 and height > 100 for complete, width, height in visit.images), visit.images
    assert FAILED_LABEL in visit.text  # visible, not only in the markup
    assert "<script>alert('x')</script>" in visit.text  # the error shown as text, not run
    colours, inked = not_blank(visit.screenshot)
    (tmp_path / "screenshot.png").write_bytes(visit.screenshot)
    assert colours > 50 and inked > 0.03, (colours, inked)
