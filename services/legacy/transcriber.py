"""Recording -> text for legacy record mode: OpenAI transcription, Deepgram pre-recorded, or a
mock that reads the call's next line of MOCK_ASR_SCRIPT (offline, like the mock recognizer)."""

from __future__ import annotations

import asyncio
from typing import Protocol

from services.settings import ConfigError, Settings

KEYS = {"openai": "OPENAI_API_KEY", "deepgram": "DEEPGRAM_API_KEY"}


class TranscriberError(RuntimeError):
    """The transcription provider failed (error answer, bad response)."""


class Transcriber(Protocol):
    async def transcribe(self, wav: bytes, *, index: int) -> str:
        """The words in one recording; `index` counts the call's recordings from 0."""
        ...


class MockTranscriber:
    """The Nth recording of a call "says" line N of the script; past its end, nothing."""

    def __init__(self, script: list[str], delay_ms: float = 0.0) -> None:
        self.script = list(script)
        self.delay_s = delay_ms / 1000

    async def transcribe(self, wav: bytes, *, index: int) -> str:
        if not wav.startswith(b"RIFF") or wav[8:12] != b"WAVE":
            raise TranscriberError("the recording is not a WAV file")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return self.script[index] if 0 <= index < len(self.script) else ""


class OpenAITranscriber:
    def __init__(self, *, api_key: str, base_url: str, model: str, timeout_s: float) -> None:
        from openai import AsyncOpenAI

        self.model = model
        self._client = AsyncOpenAI(api_key=api_key, base_url=base_url or None, max_retries=0, timeout=timeout_s)

    async def transcribe(self, wav: bytes, *, index: int) -> str:
        from openai import OpenAIError

        try:
            result = await self._client.audio.transcriptions.create(
                model=self.model, file=("recording.wav", wav, "audio/wav"))
        except OpenAIError as exc:
            raise TranscriberError(f"OpenAI transcription failed: {exc}") from exc
        return (result.text or "").strip()


class DeepgramTranscriber:
    def __init__(self, *, api_key: str, base_url: str, model: str, timeout_s: float) -> None:
        from deepgram import AsyncDeepgramClient

        from services.asr.deepgram import deepgram_environment

        self.model = model
        self._client = AsyncDeepgramClient(api_key=api_key, environment=deepgram_environment(base_url),
                                           timeout=timeout_s)

    async def transcribe(self, wav: bytes, *, index: int) -> str:
        try:
            response = await self._client.listen.v1.media.transcribe_file(
                request=wav, model=self.model, smart_format=True, punctuate=True)
            channels = response.results.channels
            return (channels[0].alternatives[0].transcript or "").strip() if channels else ""
        except Exception as exc:  # the SDK's ApiError, httpx errors, an unexpected body
            raise TranscriberError(f"Deepgram transcription failed: {exc}") from exc


def build_transcriber(settings: Settings) -> Transcriber:
    """The transcriber LEGACY_TRANSCRIBER selects; a real one without its key stops start-up."""
    name = settings.legacy_transcriber_name
    if name not in ("mock", "openai", "deepgram"):
        raise ConfigError(f"LEGACY_TRANSCRIBER={name} is not one of ['deepgram', 'mock', 'openai']")
    key = KEYS.get(name)
    if key and not getattr(settings, key.lower()):
        raise ConfigError(f"LEGACY_TRANSCRIBER={name} needs {key}; set it or choose 'mock'")
    budget = settings.legacy_response_budget_s  # a recording that takes longer has missed its turn anyway
    if name == "openai":
        return OpenAITranscriber(api_key=settings.openai_api_key, base_url=settings.openai_base_url,
                                 model=settings.openai_transcribe_model, timeout_s=budget)
    if name == "deepgram":
        return DeepgramTranscriber(api_key=settings.deepgram_api_key, base_url=settings.deepgram_base_url,
                                   model=settings.deepgram_model, timeout_s=budget)
    return MockTranscriber(settings.mock_script_lines, delay_ms=settings.mock_asr_delay_ms)
