"""Shared test helpers: a real Zylin server (uvicorn on a free loopback port) with mock providers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from main import create_app
from services.orchestrator.record import MemoryRecorder
from services.settings import Settings
from services.simulator.caller import SimulatedCaller
from services.simulator.server import serve_app
from services.telephony.rest import Telephony

ROOT = Path(__file__).resolve().parent.parent
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC_URL = "https://zylin.example.test"


def make_settings(**overrides) -> Settings:
    values = dict(
        public_url=PUBLIC_URL, twilio_auth_token=AUTH_TOKEN, use_mock_streaming=True,
        business_profile=str(ROOT / "business.example.toml"), idle_timeout_s=30.0,
        log_level="INFO",
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)


@dataclass
class Running:
    base_url: str
    settings: Settings
    recorder: MemoryRecorder

    def caller(self, speed: float = 4.0, **kwargs) -> SimulatedCaller:
        return SimulatedCaller(self.base_url, self.settings.public_url, AUTH_TOKEN, speed=speed, **kwargs)

    def call_record(self, call_sid: str) -> dict:
        return self.recorder.calls[call_sid]

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/media-stream"


@contextlib.asynccontextmanager
async def running_zylin(telephony: Telephony | None = None, **overrides) -> AsyncIterator[Running]:
    settings = make_settings(**overrides)
    recorder = MemoryRecorder()
    app = create_app(settings, recorder=recorder, telephony=telephony)
    async with serve_app(app) as base_url:
        yield Running(base_url, settings, recorder)


@pytest.fixture
async def zylin() -> AsyncIterator[Running]:
    async with running_zylin() as running:
        yield running
