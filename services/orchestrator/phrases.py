"""The lines Zylin says often and word for word (the greeting, "Let me check.", prompts,
goodbyes, the apology): synthesized once per voice, then sent from memory within a few ms. With
a folder they are kept on disk too, so a restart does not pay for them again.

A phrase is found by its exact text and the voice's `cache_key` (provider, model, voice, format):
another voice, or a changed line, is a different phrase.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path

from services.audio.codec import OutboundEncoder
from services.tts.base import SpeechSynthesizer

log = logging.getLogger("zylin.phrases")

RENDER_FIRST_BYTE_S = 3.0   # a voice that stalls fails here, rather than holding start-up


async def render(tts: SpeechSynthesizer, text: str, quality: str = "HQ",
                 first_byte_timeout_s: float | None = RENDER_FIRST_BYTE_S) -> bytes:
    """All of `text` as mu-law 8 kHz. A voice that stalls before its first byte fails here
    within the bound, rather than holding start-up (or a call's start) for its HTTP timeout."""
    encoder = OutboundEncoder(tts.sample_rate, tts.encoding, quality)
    out = bytearray()
    stream = tts.synthesize(text)
    try:
        async with asyncio.timeout(first_byte_timeout_s):
            out += encoder.push(await anext(stream, b""))
        async for chunk in stream:
            out += encoder.push(chunk)
    finally:
        await stream.aclose()
    out += encoder.flush()
    if not out:
        raise ValueError("the voice returned no audio")
    return bytes(out)


class PhraseCache:
    """Mu-law 8 kHz audio by (voice, text): rendered once, shared by every call."""

    def __init__(self, quality: str = "HQ", folder: Path | None = None,
                 first_byte_timeout_s: float | None = RENDER_FIRST_BYTE_S) -> None:
        self._quality = quality
        self._folder = folder
        self._first_byte_timeout_s = first_byte_timeout_s
        self._ready: dict[tuple[str, str], bytes] = {}
        self._rendering: dict[tuple[str, str], asyncio.Future[bytes]] = {}

    def audio(self, tts: SpeechSynthesizer, text: str) -> bytes | None:
        """The phrase's audio if it is ready now: what the speaker checks before asking a voice."""
        return self._ready.get((tts.cache_key, text))

    async def get(self, tts: SpeechSynthesizer, text: str) -> bytes:
        """The phrase's audio: from memory, else from disk, else rendered (concurrent first
        requests share one rendering; a failure is not kept, the next request tries again)."""
        key = (tts.cache_key, text)
        if (ready := self._ready.get(key)) is not None:
            return ready
        future = self._rendering.get(key)
        if future is None:
            future = asyncio.ensure_future(self._load_or_render(tts, text))
            self._rendering[key] = future
            future.add_done_callback(lambda _: self._rendering.pop(key, None))
        return await asyncio.shield(future)

    async def warm(self, tts: SpeechSynthesizer, texts: list[str]) -> int:
        """Make `texts` ready in `tts`'s voice; returns how many are. A phrase that fails is
        left out (calls then synthesize it live), with one warning for them all."""
        failed: list[str] = []
        unique = list(dict.fromkeys(texts))
        for text in unique:
            try:
                await self.get(tts, text)
            except Exception as exc:
                failed.append(type(exc).__name__)
        if failed:
            log.warning("could not pre-render %d of %d phrases in %s's voice (%s); calls say them live",
                        len(failed), len(unique), tts.cache_key.partition(":")[0], ", ".join(sorted(set(failed))))
        return len(unique) - len(failed)

    async def _load_or_render(self, tts: SpeechSynthesizer, text: str) -> bytes:
        key = (tts.cache_key, text)
        path = self._path(key)
        audio = self._read(path) if path is not None else None
        if audio is None:
            audio = await render(tts, text, self._quality, self._first_byte_timeout_s)
            if path is not None:
                self._write(path, audio)
        self._ready[key] = audio
        return audio

    def _path(self, key: tuple[str, str]) -> Path | None:
        if self._folder is None:
            return None
        digest = hashlib.sha256("\n".join(key).encode()).hexdigest()[:40]
        return self._folder / f"{digest}.ulaw"

    @staticmethod
    def _read(path: Path) -> bytes | None:
        try:
            audio = path.read_bytes()
        except OSError:
            return None
        return audio or None

    @staticmethod
    def _write(path: Path, audio: bytes) -> None:
        """Written whole or not at all (a crash mid-write leaves no half phrase); a disk that
        refuses only costs the next start a rendering."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{path.name}.{os.getpid()}.part")  # each process its own
            partial.write_bytes(audio)
            os.replace(partial, path)
        except OSError as exc:
            log.warning("could not keep a phrase on disk (%s)", exc.strerror or type(exc).__name__)
