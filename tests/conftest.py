"""Shared test helpers: a real Zylin server (uvicorn on a free loopback port) with mock providers."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from main import create_app
from services.orchestrator.record import MemoryRecorder
from services.settings import Settings
from services.simulator.caller import SimulatedCaller
from services.simulator.server import serve_app
from services.storage import Database, Storage
from services.storage.recorder import DatabaseRecorder
from services.telephony.rest import Telephony

ROOT = Path(__file__).resolve().parent.parent
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC_URL = "https://zylin.example.test"


def make_settings(**overrides) -> Settings:
    values = dict(
        public_url=PUBLIC_URL, twilio_auth_token=AUTH_TOKEN, use_mock_streaming=True,
        business_profile=str(ROOT / "business.example.toml"), idle_timeout_s=30.0,
        log_level="INFO",
        # The simulated caller (services/simulator/voice.py) is a harmonic buzz shaped for an energy
        # detector, not speech: the neural VAD is tested on espeak-ng speech (tests/test_silero_vad.py).
        vad="energy",
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)


@dataclass
class Running:
    base_url: str
    settings: Settings
    recorder: MemoryRecorder | DatabaseRecorder
    storage: Storage | None = None

    def caller(self, speed: float = 4.0, **kwargs) -> SimulatedCaller:
        return SimulatedCaller(self.base_url, self.settings.public_url, AUTH_TOKEN, speed=speed, **kwargs)

    def call_record(self, call_sid: str) -> dict:
        return self.recorder.calls[call_sid]

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/media-stream"


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
            yield Running(base_url, settings, app.state.runtime.recorder, app.state.runtime.storage)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture
async def zylin() -> AsyncIterator[Running]:
    async with running_zylin() as running:
        yield running


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
