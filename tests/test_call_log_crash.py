"""A server killed mid-call (SIGKILL: no clean-up at all) leaves every finished turn stored, and
the next start-up's sweep shows the call as ended abnormally."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from services.simulator.caller import CallerLine, SimulatedCaller
from services.storage import Database, Storage
from services.storage.vocabulary import EndReason
from tests.deployed import free_port
from tests.factories import AUTH_TOKEN, PUBLIC_URL, ROOT

SERVER = """
import sys
import uvicorn
from main import create_app
from services.simulator.server import WS_PROTOCOL
from tests.factories import make_settings

database_url, port, max_call_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
settings = make_settings(database_url=database_url, max_call_s=max_call_s, call_sweep_grace_s=0.0)
uvicorn.run(create_app(settings), host="127.0.0.1", port=port, log_level="warning", ws=WS_PROTOCOL)
"""


@contextlib.asynccontextmanager
async def server_process(database_url: str, log: Path, *,
                         max_call_s: float) -> AsyncIterator[tuple[subprocess.Popen, str]]:
    """`python -c` running uvicorn with create_app, in a process of its own we can kill."""
    port = free_port()
    with log.open("a") as out:
        process = subprocess.Popen([sys.executable, "-c", SERVER, database_url, str(port), str(max_call_s)],
                                   cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient() as http:
            while True:
                assert process.poll() is None, f"server exited at start-up:\n{log.read_text()}"
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(base_url + "/health")).status_code == 200:
                        break
                assert time.monotonic() < deadline, f"server did not start:\n{log.read_text()}"
                await asyncio.sleep(0.1)
        yield process, base_url
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def test_a_server_killed_mid_call_leaves_the_finished_turns_and_the_restart_marks_the_call_abnormal(tmp_path):
    database_url = f"sqlite+aiosqlite:///{tmp_path}/zylin.db"
    log = tmp_path / "server.log"
    reader = Storage(Database(database_url))
    lines = [CallerLine("What are your opening hours?"), CallerLine("How much is a cleaning?"),
             CallerLine("Do you have parking?"), CallerLine("That's all, bye!")]
    try:
        async with server_process(database_url, log, max_call_s=900) as (process, base_url):
            caller = SimulatedCaller(base_url, PUBLIC_URL, AUTH_TOKEN, speed=2.0, reply_timeout_s=5)
            call = asyncio.create_task(caller.call(lines))
            call_sid = ""
            deadline = time.monotonic() + 30
            while True:  # until the first caller turn and its reply are stored
                calls, _ = await reader.calls.list_calls()
                if calls:
                    call_sid = calls[0].call_sid
                    stored = await reader.calls.get_call(call_sid)
                    if any(t.speaker == "caller" for t in stored.turns):
                        break
                assert time.monotonic() < deadline and not call.done(), log.read_text()
                await asyncio.sleep(0.05)
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            await asyncio.wait_for(call, 30)  # the caller sees the line go dead

        after_crash = await reader.calls.get_call(call_sid)
        assert after_crash.call.status == "in-progress", "nobody could close it"
        texts = [t.text for t in after_crash.turns]
        assert texts[0].startswith("Thanks for calling") and "What are your opening hours?" in texts
        assert "Do you have parking?" not in texts, "it died before that"
        hours = next(t for t in after_crash.turns if t.text == "What are your opening hours?")
        assert hours.first_audio_ms is not None, "the finished turn kept its latency"

        # Restarted (here with a short MAX_CALL_S so the sweep need not wait 15 minutes):
        async with server_process(database_url, log, max_call_s=0.5) as (_, base_url):
            async with httpx.AsyncClient(base_url=base_url) as http:
                record = (await http.get(f"/api/calls/{call_sid}")).json()
                page = (await http.get(f"/calls/{call_sid}")).text
    finally:
        await reader.db.close()

    assert record["status"] == "abnormal" and record["end_reason"] == EndReason.SWEPT
    assert record["outcome"] == "error" and record["ended_at"] is not None
    assert [t["text"] for t in record["turns"]] == [t.text for t in after_crash.turns]
    assert "ended abnormally" in page and "What are your opening hours?" in page
    assert "closed 1 call(s) left open" in log.read_text()
