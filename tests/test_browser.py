"""The call-log pages in a real browser: Debian's headless Chromium against the running server.

Content is checked on the DOM Chromium built (--dump-dom), layout through the DevTools protocol
(bubbles on their sides, latency bars drawn, nothing wider than the window), and a screenshot is
kept for the README (docs/call-log.png: written when missing or with UPDATE_SCREENSHOTS=1).
CI installs the browser: apt-get install -y chromium.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest
import websockets

from services.simulator.caller import CallerLine
from tests.conftest import running_zylin
from tests.factories import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (apt-get install -y chromium chromium-driver; CI installs it)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--disable-dev-shm-usage"]
SCREENSHOTS = {"call": ROOT / "docs" / "call-log.png", "list": ROOT / "docs" / "call-list.png"}


def new_profile(workdir: Path) -> str:
    """A browser profile of its own (under pytest's tmp_path: Chromium's helpers may still be
    writing to it when the browser exits, so it is not removed here)."""
    return tempfile.mkdtemp(prefix="chromium-", dir=workdir)


async def chromium(workdir: Path, *args: str, timeout_s: float = 60.0) -> str:
    process = await asyncio.create_subprocess_exec(
        CHROMIUM, *FLAGS, f"--user-data-dir={new_profile(workdir)}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


async def screenshot(workdir: Path, url: str, path: Path) -> Path:
    await chromium(workdir, f"--screenshot={path}", "--window-size=1280,900", url)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    return path


def keep(kind: str, tmp_path: Path) -> Path:
    """Where a screenshot goes: docs/ when it is missing there or UPDATE_SCREENSHOTS=1."""
    target = SCREENSHOTS[kind]
    if os.environ.get("UPDATE_SCREENSHOTS") == "1" or not target.exists():
        return target
    return tmp_path / target.name


class DevTools:
    """Just enough of the Chrome DevTools protocol: open a page, evaluate JavaScript."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def send(self, method: str, **params) -> dict:
        ident = next(self.ids)
        await self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
            if message.get("id") == ident:
                assert "error" not in message, message
                return message.get("result", {})

    async def open(self, url: str) -> None:
        await self.send("Page.enable")
        await self.send("Page.navigate", url=url)
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
            if message.get("method") == "Page.loadEventFired":
                return

    async def evaluate(self, expression: str):
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")


async def layout_of(workdir: Path, url: str) -> dict:
    profile = new_profile(workdir)
    process = await asyncio.create_subprocess_exec(
        CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
        "--window-size=1280,900", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        for _ in range(200):
            if port_file.exists() and port_file.read_text().strip():
                break
            await asyncio.sleep(0.05)
        port = port_file.read_text().split()[0]
        async with httpx.AsyncClient() as http:
            targets = (await http.get(f"http://127.0.0.1:{port}/json/list")).json()
        page = next(t for t in targets if t["type"] == "page")
        async with websockets.connect(page["webSocketDebuggerUrl"], max_size=None) as ws:
            tools = DevTools(ws)
            await tools.open(url)
            return await tools.evaluate("""(() => {
              const box = el => el.getBoundingClientRect();
              const main = box(document.querySelector('main section'));
              const caller = box(document.querySelector('.turn.caller .bubble'));
              const zylin = box(document.querySelectorAll('.turn.zylin .bubble')[1]);
              const rects = [...document.querySelectorAll('.lat svg rect[fill^="#"]')];
              return {
                callerLeft: caller.left - main.left, zylinRight: main.right - zylin.right,
                callerWidth: caller.width, mainWidth: main.width,
                bars: document.querySelectorAll('.lat svg').length,
                drawnParts: rects.filter(r => r.getBoundingClientRect().width > 0).length,
                overflow: document.documentElement.scrollWidth - window.innerWidth,
                unheardStruck: getComputedStyle(document.querySelector('.unheard')).textDecorationLine,
                asideBesideTalk: box(document.querySelector('aside')).left >= main.right,
              };
            })()""")
    finally:
        process.terminate()
        await process.wait()


async def test_the_call_log_pages_render_in_chromium(tmp_path):
    async with running_zylin(database=True, admin_token="") as zylin:
        result = await zylin.caller(from_number="+15550142233", speed=2.5).call([
            CallerLine("What are your opening hours?", pause_before_ms=100),
            CallerLine("Sorry, how much is a cleaning?", barge_in_after_ms=1500),
            CallerLine("Can I speak to a person?"),
            CallerLine("Please ask them to call me back about my crown."),
            CallerLine("That's all, thank you. Bye!"),
        ], hang_up=False)
        await zylin.recorder.wait_ended(result.call_sid)
        other = await zylin.caller(from_number="+15550178899").call([CallerLine("Do you have parking?")])
        await zylin.recorder.wait_ended(other.call_sid)

        call_url = f"{zylin.base_url}/calls/{result.call_sid}"
        dom = await chromium(tmp_path, "--dump-dom", call_url)
        listing = await chromium(tmp_path, "--dump-dom", f"{zylin.base_url}/calls")
        layout = await layout_of(tmp_path, call_url)
        shot = await screenshot(tmp_path, call_url, keep("call", tmp_path))
        await screenshot(tmp_path, f"{zylin.base_url}/calls", keep("list", tmp_path))

    assert "Call from" in dom and "+15550142233" in dom
    assert "What are your opening hours?" in dom and "$120" in dom
    assert "interrupted by the caller; heard" in dom and 'class="unheard"' in dom
    assert dom.count("call me back about my crown") >= 2, "said in the call, and listed as its message"
    assert "Median to first audio" in dom and "<svg" in dom
    assert result.call_sid in listing and other.call_sid in listing and "+15550178899" in listing

    assert layout["callerLeft"] < 5, "caller bubbles sit on the left"
    assert layout["zylinRight"] < 5, "Zylin's bubbles sit on the right"
    assert layout["callerWidth"] < layout["mainWidth"] * 0.8
    assert layout["bars"] >= 4 and layout["drawnParts"] >= 3 * layout["bars"], "every bar is drawn"
    assert layout["overflow"] <= 0, "nothing wider than the window"
    assert layout["unheardStruck"] == "line-through"
    assert layout["asideBesideTalk"]
    assert shot.exists()
