"""The simulated caller's voice: deterministic, voiced, speech-like audio at 8 kHz mu-law.

Not words, but what a voice activity detector and an energy-based mock ASR see in speech:
a harmonic tone with a wandering pitch, shaped into syllables, with short gaps between words
(never longer than a VAD's end-of-speech silence, so one line stays one utterance).
"""

from __future__ import annotations

import zlib

import numpy as np

from services.audio.codec import FRAME_BYTES, TWILIO_RATE, pcm_to_ulaw

SECONDS_PER_CHAR = 0.07
MIN_SECONDS = 0.6
WORD_GAP_MS = (60, 100)          # silence between words; stays below MAX_GAP_MS
MAX_GAP_MS = 120
SYLLABLE_S = 0.18
PEAK = 0.55 * 32767              # loud enough: voiced frames have RMS well above 1500
ENVELOPE_FLOOR = 0.6             # syllable dips never fall to silence inside a word
EDGE_S = 0.008                   # attack / release at word edges, avoids clicks


def speech_seconds(text: str) -> float:
    """Natural length of a spoken line: ~70 ms per character, at least 0.6 s."""
    return max(MIN_SECONDS, SECONDS_PER_CHAR * len(text))


def _rng(text: str, seed: int | str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"{seed}\x00{text}".encode()))


def _word_lengths(text: str) -> list[int]:
    words = [len(w) for w in text.split()]
    return words or [1]


def _voiced(n: int, rng: np.random.Generator, f0: float) -> np.ndarray:
    """One word: harmonic tone, gentle pitch glide, syllable envelope with a floor."""
    t = np.arange(n) / TWILIO_RATE
    glide = f0 * (1.0 + rng.uniform(-0.08, 0.08) * t / max(t[-1], 1e-3))
    phase = 2 * np.pi * np.cumsum(glide) / TWILIO_RATE
    wave = np.zeros(n)
    for k in range(1, 11):  # harmonics with a soft formant bump around 500-900 Hz
        formant = 1.0 + 1.5 * np.exp(-(((k * f0) - 700.0) / 300.0) ** 2)
        wave += formant / k * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    wave /= np.max(np.abs(wave)) or 1.0

    syllables = max(1, round(n / TWILIO_RATE / SYLLABLE_S))
    x = np.linspace(0.0, syllables * np.pi, n, endpoint=False)
    envelope = ENVELOPE_FLOOR + (1 - ENVELOPE_FLOOR) * np.abs(np.sin(x))
    edge = min(int(EDGE_S * TWILIO_RATE), n // 2)
    if edge:
        ramp = np.linspace(0.3, 1.0, edge)
        envelope[:edge] *= ramp
        envelope[-edge:] *= ramp[::-1]
    return wave * envelope * PEAK


def speech_pcm(text: str, seed: int | str = 0) -> bytes:
    """PCM16 8 kHz of `text` spoken; starts and ends voiced; a whole number of 20 ms frames."""
    rng = _rng(text, seed)
    frames = round(speech_seconds(text) * 1000 / 20)
    total = frames * FRAME_BYTES
    words = _word_lengths(text)
    gaps = [int(rng.integers(WORD_GAP_MS[0], WORD_GAP_MS[1] + 1)) * TWILIO_RATE // 1000
            for _ in words[1:]]
    while sum(gaps) > total * 0.3:  # very short lines with many words: shrink the gaps
        gaps = [g // 2 for g in gaps]
    voiced_total = total - sum(gaps)
    chars = sum(words)
    sizes = [voiced_total * w // chars for w in words]
    sizes[-1] += voiced_total - sum(sizes)

    f0 = rng.uniform(110.0, 190.0)
    pieces: list[np.ndarray] = []
    for i, size in enumerate(sizes):
        if i:
            pieces.append(np.zeros(gaps[i - 1]))
        if size > 0:
            pieces.append(_voiced(size, rng, f0 * rng.uniform(0.95, 1.05)))
    pcm = np.concatenate(pieces)[:total]
    return np.clip(np.round(pcm), -32768, 32767).astype("<i2").tobytes()


def speech_ulaw(text: str, seed: int | str = 0) -> bytes:
    """Mu-law 8 kHz of `text` spoken, ready to slice into 160-byte media frames."""
    return pcm_to_ulaw(speech_pcm(text, seed))
