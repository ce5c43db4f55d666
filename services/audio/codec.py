"""Telephone audio: G.711 mu-law <-> PCM16, streaming resampling to 8 kHz, 20 ms framing.

Everything here runs per frame on every call, so it stays allocation-light and stateful per call:
a resampler fed chunk by chunk must keep its filter state or the seams click.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():  # stdlib up to 3.12 (deprecated there), audioop-lts from 3.13
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

import numpy as np
import soxr

TWILIO_RATE = 8000
FRAME_MS = 20
FRAME_BYTES = TWILIO_RATE * FRAME_MS // 1000  # mu-law: one byte per sample -> 160


def ulaw_to_pcm(ulaw: bytes) -> bytes:
    return audioop.ulaw2lin(ulaw, 2)


def pcm_to_ulaw(pcm: bytes) -> bytes:
    return audioop.lin2ulaw(pcm, 2)


def rms(pcm: bytes) -> int:
    """Energy of a PCM16 chunk, for the voice activity detector."""
    return audioop.rms(pcm, 2)


class Resampler:
    """PCM16 mono from `in_rate` to `out_rate`, fed in arbitrary (even odd-length) byte chunks."""

    def __init__(self, in_rate: int, out_rate: int = TWILIO_RATE, quality: str = "HQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._carry = b""
        self._stream = None
        if in_rate != out_rate:
            self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)

    def push(self, pcm: bytes) -> bytes:
        if self._carry:
            pcm = self._carry + pcm
            self._carry = b""
        if len(pcm) & 1:  # a stream chunk may split a sample: keep the odd byte for next time
            self._carry = pcm[-1:]
            pcm = pcm[:-1]
        if self._stream is None or not pcm:
            return pcm
        return self._stream.resample_chunk(np.frombuffer(pcm, dtype=np.int16)).tobytes()

    def flush(self) -> bytes:
        """End of a continuous piece (a sentence): drain the filter and start clean."""
        self._carry = b""
        if self._stream is None:
            return b""
        tail = self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True).tobytes()
        self._stream.clear()
        return tail


class Framer:
    """Cuts a byte stream into whole frames, keeping the remainder for the next push."""

    def __init__(self, frame_bytes: int = FRAME_BYTES) -> None:
        self.frame_bytes = frame_bytes
        self._rest = b""

    def push(self, data: bytes) -> bytes:
        data = self._rest + data if self._rest else data
        cut = len(data) - len(data) % self.frame_bytes
        self._rest = data[cut:]
        return data[:cut]

    def flush(self) -> bytes:
        rest, self._rest = self._rest, b""
        return rest


class OutboundEncoder:
    """TTS output (PCM16 at its rate, or mu-law 8k already) -> mu-law 8k in whole 20 ms frames.

    One per call, reused sentence after sentence; `flush()` at each sentence end returns the
    sentence's last (possibly partial) frame so no audio waits for the next sentence.
    """

    def __init__(self, in_rate: int, encoding: str = "pcm16", quality: str = "HQ") -> None:
        self.ulaw_in = encoding == "mulaw"
        if self.ulaw_in and in_rate != TWILIO_RATE:
            raise ValueError("mu-law TTS audio must already be 8 kHz")
        self._resampler = None if self.ulaw_in else Resampler(in_rate, TWILIO_RATE, quality)
        self._framer = Framer()

    def push(self, chunk: bytes) -> bytes:
        if self._resampler is None:
            return self._framer.push(chunk)
        pcm = self._resampler.push(chunk)
        return self._framer.push(pcm_to_ulaw(pcm)) if pcm else b""

    def flush(self) -> bytes:
        if self._resampler is None:
            return self._framer.flush()
        tail = self._resampler.flush()
        out = self._framer.push(pcm_to_ulaw(tail)) if tail else b""
        return out + self._framer.flush()

    def reset(self) -> None:
        """Barge-in: forget the unsent rest of the interrupted sentence."""
        if self._resampler is not None:
            self._resampler.flush()
        self._framer.flush()
