"""Shared fixtures: a real Zylin server (uvicorn on a free loopback port) with mock providers, the
wire-level fakes, and fresh databases. The plain builders they use are in factories.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import websockets
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from twilio.request_validator import RequestValidator

from main import create_app
from services.orchestrator.database_recorder import DatabaseRecorder
from services.orchestrator.record import MemoryRecorder
from services.runtime import Runtime
from services.settings import Settings
from services.simulator.caller import SimulatedCaller, parse_stream_twiml
from services.simulator.server import serve_app
from services.storage import Database, Storage
from services.telephony.rest import Telephony
from tests.factories import AUTH_TOKEN, PROVIDER_KEY, make_settings

# Modules written before factories.py import these two from here; they stay importable.
from tests.factories import PUBLIC_URL as PUBLIC_URL
from tests.factories import ROOT as ROOT
from tests.fakes.deepgram_server import FakeDeepgram
from tests.fakes.openai_server import FakeOpenAI


@dataclass
class Running:
    """A Zylin server the test started, and how to reach it as Twilio does."""
    base_url: str
    settings: Settings
    recorder: MemoryRecorder | DatabaseRecorder
    storage: Storage | None = None
    runtime: Runtime | None = None

    def caller(self, speed: float = 4.0, **kwargs) -> SimulatedCaller:
        return SimulatedCaller(self.base_url, self.settings.public_url, AUTH_TOKEN, speed=speed, **kwargs)

    def call_record(self, call_sid: str) -> dict:
        return self.recorder.calls[call_sid]

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/media-stream"

    def media_socket(self, **kwargs: Any) -> websockets.connect:
        """A Media Stream WebSocket as Twilio opens one (signed over the stream URL), before any
        message: for tests that write the frames themselves."""
        signature = RequestValidator(AUTH_TOKEN).compute_signature(self.settings.media_stream_url, {})
        return websockets.connect(self.ws_url, additional_headers={"X-Twilio-Signature": signature}, **kwargs)

    async def stream_twiml(self, call_sid: str, *, from_number: str = "+15550007777",
                           to_number: str = "+15559870000") -> tuple[str, dict[str, str]]:
        """The stream URL and parameters (the stream token) the real, signed voice webhook hands
        Twilio for this call between these numbers."""
        form = {"CallSid": call_sid, "AccountSid": "AC" + "1" * 32, "From": from_number, "To": to_number,
                "CallStatus": "ringing", "Direction": "inbound"}
        response = await self.caller().post_signed("/api/twilio/voice", form)
        assert response.status_code == 200, response.text
        url, params = parse_stream_twiml(response.text)
        assert url and params, response.text
        return url, params


@contextlib.asynccontextmanager
async def running_zylin(telephony: Telephony | None = None, *, database: bool = False,
                        **overrides) -> AsyncIterator[Running]:
    """A server on a fresh SQLite file. Its recorder keeps calls in memory, or with
    `database=True` is the production DatabaseRecorder (`wait_ended` returns the stored call)."""
    scratch = tempfile.mkdtemp(prefix="zylin-test-")
    try:
        overrides.setdefault("database_url", f"sqlite+aiosqlite:///{scratch}/zylin.db")
        settings = make_settings(**overrides)
        memory = None if database else MemoryRecorder()
        app = create_app(settings, recorder=memory, telephony=telephony)
        async with serve_app(app) as base_url:
            runtime = app.state.runtime
            yield Running(base_url, settings, runtime.recorder, runtime.storage, runtime)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture
async def zylin() -> AsyncIterator[Running]:
    async with running_zylin() as running:
        yield running


# --- the provider fakes, on 127.0.0.1, taking only PROVIDER_KEY ------------------------------------------

@pytest.fixture
async def deepgram() -> AsyncIterator[FakeDeepgram]:
    async with FakeDeepgram(api_key=PROVIDER_KEY) as fake:
        yield fake


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key=PROVIDER_KEY) as fake:
        yield fake


# --- databases for storage tests: SQLite always, PostgreSQL when TEST_DATABASE_URL is set -----------

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")
DATABASES = ["sqlite"] + (["postgresql"] if TEST_DATABASE_URL else [])


@contextlib.asynccontextmanager
async def fresh_database(kind: str) -> AsyncIterator[Database]:
    """A migrated, empty database of its own: a new SQLite file, or a new PostgreSQL schema
    (dropped afterwards), so test runs and test modules never see each other's rows."""
    if kind == "sqlite":
        scratch = tempfile.mkdtemp(prefix="zylin-db-")
        database = Database(f"sqlite+aiosqlite:///{scratch}/zylin.db")
        try:
            await database.upgrade()
            yield database
        finally:
            await database.close()
            shutil.rmtree(scratch, ignore_errors=True)
        return
    schema = f"zylin_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(TEST_DATABASE_URL)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    database = Database(TEST_DATABASE_URL, schema=schema)
    try:
        await database.upgrade()
        yield database
    finally:
        await database.close()
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


@pytest.fixture(params=DATABASES)
async def database(request) -> AsyncIterator[Database]:
    async with fresh_database(request.param) as db:
        yield db
