"""WAV files of what a simulated call sounded like (8 kHz, 16-bit, mono), via the stdlib `wave`."""

from __future__ import annotations

import wave
from pathlib import Path

from services.audio.codec import TWILIO_RATE, ulaw_to_pcm


def write_pcm_wav(path: str | Path, pcm16: bytes, sample_rate: int = TWILIO_RATE) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm16)
    return path


def write_ulaw_wav(path: str | Path, ulaw: bytes) -> Path:
    """Decode telephone mu-law and write it as a plain PCM WAV any player opens."""
    return write_pcm_wav(path, ulaw_to_pcm(ulaw), TWILIO_RATE)


def read_pcm_wav(path: str | Path) -> tuple[bytes, int]:
    """(PCM16 mono bytes, sample rate) of a WAV written here."""
    with wave.open(str(path), "rb") as src:
        if src.getnchannels() != 1 or src.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit mono WAV")
        return src.readframes(src.getnframes()), src.getframerate()
