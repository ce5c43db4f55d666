"""The README's first command: the offline demo call books, takes a message and hangs up."""

from __future__ import annotations

import wave

from main import create_app
from services.simulator.demo import run_demo
from tests.factories import make_settings


async def test_the_demo_call_runs_offline_books_and_writes_what_the_caller_heard(tmp_path, capsys):
    wav = tmp_path / "demo.wav"
    settings = make_settings(twilio_auth_token="", database_url="sqlite+aiosqlite://")
    assert await run_demo(settings, create_app, wav_path=str(wav), speed=8.0) == 0

    out = capsys.readouterr().out
    assert "Your confirmation code is" in out
    assert "passed your message on" in out
    assert "Call ended: zylin ended the call" in out
    assert "first_audio" in out and "overhead" in out
    with wave.open(str(wav)) as heard:
        assert heard.getframerate() == 8000 and heard.getnframes() > 8000 * 20
