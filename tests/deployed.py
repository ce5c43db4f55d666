"""Zylin as it is deployed: `python main.py` in its own process, configured only by environment
variables, exactly as an owner runs it, with every provider pointed at a wire-level fake served on
127.0.0.1 by the test process (Twilio REST, Deepgram, OpenAI) and a real database.

In-process tests build the app inside a running event loop; this catches what only the real
start-up sees (objects that need a loop built before uvicorn's exists, settings read from the
environment, logging configured by `main`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.simulator.caller import SimulatedCaller
from tests.conftest import TEST_DATABASE_URL
from tests.factories import AUTH_TOKEN, EXAMPLE_PROFILE, PROVIDER_KEY, PUBLIC_URL, ROOT

ADMIN_TOKEN = "deployed-admin-token"
LISTENING = "Zylin listening on"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def fresh_database_url(kind: str) -> AsyncIterator[str]:
    """A new, empty database for one server: a SQLite file, or a PostgreSQL database of its own."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="zylin-deployed-") as folder:
            yield f"sqlite+aiosqlite:///{folder}/zylin.db"
        return
    name = f"zylin_deployed_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(TEST_DATABASE_URL, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        base, _, _ = TEST_DATABASE_URL.rpartition("/")
        yield f"{base}/{name}"
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


@dataclass
class Deployed:
    base_url: str
    env: dict[str, str]
    output: list[str] = field(default_factory=list)   # the server's log lines so far

    def caller(self, speed: float = 2.0, **kwargs) -> SimulatedCaller:
        return SimulatedCaller(self.base_url, PUBLIC_URL, AUTH_TOKEN, speed=speed, **kwargs)

    async def api(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10,
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
            return await http.get(path)

    @property
    def log(self) -> str:
        return "\n".join(self.output)


def production_env(database_url: str, port: int, **overrides: str) -> dict[str, str]:
    """What an owner's `.env` holds in production, pointed at the fakes by the overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "OPENAI_", "DEEPGRAM_"))}
    env.update({
        "HOST": "127.0.0.1", "PORT": str(port), "PUBLIC_URL": PUBLIC_URL, "LOG_LEVEL": "INFO",
        "DATABASE_URL": database_url, "ADMIN_TOKEN": ADMIN_TOKEN,
        "BUSINESS_PROFILE": str(EXAMPLE_PROFILE),
        "TWILIO_ACCOUNT_SID": "AC" + "7" * 32, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,  # FakeTwilioRest's SID
        "STREAM_TOKEN_SECRET": "deployed-stream-secret",
        "DEEPGRAM_API_KEY": PROVIDER_KEY, "OPENAI_API_KEY": PROVIDER_KEY,
        "USE_MOCK_STREAMING": "false", "PYTHONUNBUFFERED": "1",
    })
    env.update(overrides)
    return env


@contextlib.asynccontextmanager
async def deployed_zylin(env: dict[str, str], *, cwd: Path | None = None,
                         startup_timeout_s: float = 30.0) -> AsyncIterator[Deployed]:
    """`python main.py` with `env`; yields once it says it listens and /ready answers."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "main.py"), env=env, cwd=str(cwd or tempfile.gettempdir()),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    deployed = Deployed(f"http://127.0.0.1:{env['PORT']}", env)
    listening = asyncio.Event()

    async def read_output() -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            deployed.output.append(line)
            if LISTENING in line:
                listening.set()

    reader = asyncio.create_task(read_output())
    try:
        waiter = asyncio.ensure_future(listening.wait())
        exited = asyncio.ensure_future(process.wait())
        await asyncio.wait({waiter, exited}, timeout=startup_timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if not listening.is_set():
            waiter.cancel()
            raise AssertionError(f"python main.py did not start (exit {process.returncode}):\n{deployed.log}")
        exited.cancel()
        async with httpx.AsyncClient(timeout=5) as http:
            ready = await http.get(deployed.base_url + "/ready")
        assert ready.status_code == 200, f"/ready answered {ready.status_code}: {ready.text}\n{deployed.log}"
        yield deployed
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
