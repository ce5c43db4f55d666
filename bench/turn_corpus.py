"""A labelled turn-taking corpus: caller lines, noise, hum, bursts and echo, as Twilio sends them.

    python -m bench.turn_corpus [--rebuild]

Made here, offline and seeded: caller lines are spoken by espeak-ng (several voices and rates),
resampled to 8 kHz with soxr and carried through mu-law with audioop exactly as the phone network
hands them to Zylin (services/audio/codec.py), then mixed with pink or brown noise, 50/60 Hz hum
with harmonics, babble (several espeak lines summed), clicks and cough-like bursts, or Zylin's own
voice coming back as echo. Ground truth is taken from the clean speech's 20 ms energy envelope
before mixing, so a label never depends on the noise laid over it.

Clips are cached under bench/.cache/ (gitignored), keyed by the corpus version, the seed and
espeak-ng's version: a second run reads them back in well under a second.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
import pickle
import shutil
import subprocess
import sys
import wave
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import soxr

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from services.audio.codec import FRAME_BYTES, TWILIO_RATE, pcm_to_ulaw, ulaw_to_pcm

VERSION = 3
CACHE = Path(__file__).resolve().parent / ".cache"
FRAME = FRAME_BYTES                      # samples per 20 ms frame at 8 kHz (160)
FRAME_S = FRAME / TWILIO_RATE
FULL_SCALE = 32767.0

CALLER_LINES = [
    "Hi, I'd like to book a cleaning for next Tuesday.",
    "How much is a cleaning?",
    "Is there parking near the office?",
    "What are your opening hours on Saturday?",
    "Can I speak to someone about my bill?",
    "Yes.",
    "No, thank you.",
    "My name is Maria Lopez.",
    "Sure, three o'clock works for me.",
    "Actually, wait, can we make it Thursday instead?",
    "Okay.",
    "I need to cancel my appointment.",
]
ZYLIN_LINES = [
    "Thanks for calling Bright Smile Dental, how can I help you today?",
    "A cleaning is one hundred and twenty dollars, and most insurance covers it.",
    "We're open Monday to Friday from eight to five, and Saturday mornings.",
    "I have Tuesday at ten or Wednesday at two. Which would you like?",
]
BABBLE_LINES = [
    "The meeting has been moved to the second floor.",
    "Did you see the game last night?",
    "I'll have the soup and a small salad, please.",
    "We should leave before the traffic gets bad.",
    "She said the package would arrive on Friday.",
    "Turn left after the bridge and keep going.",
]
CALLER_VOICES = [("en-us", 160), ("en-gb", 175), ("en+f3", 150), ("en-us+m3", 190), ("en+f4", 140),
                 ("en-gb+m4", 170)]
ZYLIN_VOICE = ("en-us+f2", 170)
BABBLE_VOICES = [("en-us+m1", 165), ("en+f1", 155), ("en-gb+m2", 180), ("en+f5", 170)]


@dataclass
class Clip:
    """One stream as Twilio would send it, with the truth about where the caller spoke."""

    name: str
    kind: str                      # "speech" (the caller talks) or what the speech-free clip holds
    condition: str                 # e.g. "pink snr 10 dB", "hum 60 Hz -25 dBFS", "burst 300 ms"
    ulaw: bytes                    # 8 kHz mu-law, a whole number of 20 ms frames
    speech: np.ndarray             # bool per 20 ms frame: the caller is speaking
    utterances: list[tuple[int, int]] = field(default_factory=list)  # [start, end) frames, per line

    @property
    def frames(self) -> int:
        return len(self.ulaw) // FRAME

    @property
    def seconds(self) -> float:
        return self.frames * FRAME_S

    def pcm_frames(self) -> list[bytes]:
        """What on_media hands the VAD: PCM16 of each 20 ms frame, decoded from the mu-law."""
        pcm = ulaw_to_pcm(self.ulaw)
        return [pcm[i:i + 2 * FRAME] for i in range(0, len(pcm), 2 * FRAME)]


# --- sources -----------------------------------------------------------------------------------

def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


@cache
def espeak_version() -> str:
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    return out.split("Data at")[0].strip()


def espeak(text: str, voice: str, rate: int) -> np.ndarray:
    """`text` spoken by espeak-ng, as float samples (full scale 1.0) at 8 kHz."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "--stdout", text],
                         capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate_in = w.getframerate()
        raw = w.readframes(w.getnframes())
    samples = np.frombuffer(raw, dtype=np.int16).astype(np.float64) / FULL_SCALE
    return np.asarray(soxr.resample(samples, rate_in, TWILIO_RATE, quality="HQ"), dtype=np.float64)


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f noise by spectral shaping of white noise."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / TWILIO_RATE)
    f[0] = f[1]
    return np.fft.irfft(spectrum / np.sqrt(f), n)


def brown(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f^2 noise (integrated white), with the drift below 20 Hz taken out."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / TWILIO_RATE)
    shaped = spectrum / np.maximum(f, 20.0)
    shaped[f < 20.0] = 0
    return np.fft.irfft(shaped, n)


def hum(n: int, mains_hz: float, rng: np.random.Generator) -> np.ndarray:
    """Mains hum: the fundamental and odd-heavy harmonics, as a buzzing line or ground loop makes."""
    t = np.arange(n) / TWILIO_RATE
    out = np.zeros(n)
    for k in range(1, 12):
        weight = (1.0 if k % 2 else 0.4) / k
        out += weight * np.sin(2 * np.pi * mains_hz * k * t + rng.uniform(0, 2 * np.pi))
    return out


def bandpass(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    spectrum = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / TWILIO_RATE)
    spectrum[(f < lo) | (f > hi)] = 0
    return np.fft.irfft(spectrum, len(x))


def cough(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A cough or a knock near the mouthpiece: band-limited noise, sharp attack, decaying tail."""
    n = int(seconds * TWILIO_RATE)
    lo, hi = rng.uniform(200, 500), rng.uniform(2000, 3500)
    noise = bandpass(rng.standard_normal(n), lo, hi)
    t = np.arange(n) / n
    envelope = np.minimum(1.0, t * 25) * np.exp(-3.0 * t)
    return noise * envelope


def click(rng: np.random.Generator) -> np.ndarray:
    """A line click: a few milliseconds of ringing."""
    n = int(0.006 * TWILIO_RATE)
    t = np.arange(n) / TWILIO_RATE
    return np.sin(2 * np.pi * rng.uniform(800, 2500) * t) * np.exp(-t * 900) * rng.choice([-1, 1])


def spoken_ulaw(text: str, voice: str = "en-us", rate: int = 165, level_db: float = -20.0) -> bytes:
    """A caller line as Twilio would carry it: espeak-ng at `level_db` active level, 8 kHz mu-law."""
    said = espeak(text, voice, rate)
    return to_ulaw(at_dbfs(said, level_db + rms_db(said) - _active_db(said)))


# --- levels and labels ---------------------------------------------------------------------------

def rms_db(x: np.ndarray) -> float:
    return 20 * math.log10(max(float(np.sqrt(np.mean(x * x))), 1e-12))


def at_dbfs(x: np.ndarray, dbfs: float) -> np.ndarray:
    """Scale to an RMS level in dBFS (a full-scale sine is -3 dBFS)."""
    return x * 10 ** ((dbfs - rms_db(x)) / 20)


def frame_rms_db(x: np.ndarray) -> np.ndarray:
    frames = x[:len(x) - len(x) % FRAME].reshape(-1, FRAME)
    return 20 * np.log10(np.maximum(np.sqrt(np.mean(frames * frames, axis=1)), 1e-9))


def speech_labels(clean: np.ndarray, floor_db: float = 30.0, bridge_ms: int = 200) -> np.ndarray:
    """Ground truth per frame from the clean speech alone: within `floor_db` of its loudest frame,
    with gaps between words up to `bridge_ms` bridged (a pause inside a line is not a turn end)."""
    level = frame_rms_db(clean)
    voiced = level >= level.max() - floor_db
    bridge = bridge_ms // 20
    idx = np.flatnonzero(voiced)
    for a, b in zip(idx[:-1], idx[1:], strict=True):
        if 1 < b - a <= bridge + 1:
            voiced[a:b] = True
    return voiced


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def to_ulaw(x: np.ndarray) -> bytes:
    n = len(x) - len(x) % FRAME
    pcm = np.clip(np.round(x[:n] * FULL_SCALE), -32768, 32767).astype(np.int16)
    return pcm_to_ulaw(pcm.tobytes())


# --- the corpus ------------------------------------------------------------------------------------

def _line_speech(rng: np.random.Generator, lines: list[str], voices: list[tuple[str, int]],
                 count: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """`count` caller lines with pauses between them (≥ 1 s: each one a turn), and their spans."""
    pieces: list[np.ndarray] = [np.zeros(int(rng.uniform(0.6, 1.4) * TWILIO_RATE))]
    spans: list[tuple[int, int]] = []
    at = len(pieces[0])
    for _ in range(count):
        voice, rate = voices[int(rng.integers(len(voices)))]
        line = lines[int(rng.integers(len(lines)))]
        rate = int(rate + rng.integers(-10, 11))
        said = espeak(line, voice, rate)
        said = at_dbfs(said, float(rng.uniform(-26, -16)) + (rms_db(said) - _active_db(said)))
        pieces.append(said)
        spans.append((at, at + len(said)))
        at += len(said)
        gap = np.zeros(int(rng.uniform(1.2, 2.0) * TWILIO_RATE))
        pieces.append(gap)
        at += len(gap)
    out = np.concatenate(pieces)
    return out[:len(out) - len(out) % FRAME], spans


def _active_db(x: np.ndarray) -> float:
    """Level of the voiced part only: what a speech level of -20 dBFS means."""
    level = frame_rms_db(x)
    active = level[level >= level.max() - 30]
    return float(10 * np.log10(np.mean(10 ** (active / 10))))


def _babble(n: int, rng: np.random.Generator) -> np.ndarray:
    voices = []
    for voice, rate in BABBLE_VOICES:
        talk = np.concatenate([espeak(line, voice, rate) for line in rng.permutation(BABBLE_LINES)])
        talk = np.tile(talk, n // len(talk) + 1)
        shift = int(rng.integers(len(talk) - n + 1))
        voices.append(at_dbfs(talk[shift:shift + n], -20.0))
    return np.sum(voices, axis=0)


def _echo(n: int, rng: np.random.Generator) -> np.ndarray:
    """Zylin's reply as the caller's line sends it back: band-limited, delayed, at -20 dBFS before
    the echo loss is applied."""
    voice, rate = ZYLIN_VOICE
    talk = np.concatenate([np.concatenate([espeak(line, voice, rate), np.zeros(int(0.4 * TWILIO_RATE))])
                           for line in ZYLIN_LINES])
    talk = np.tile(talk, n // len(talk) + 1)
    shift = int(rng.integers(len(talk) - n + 1))
    delayed = np.concatenate([np.zeros(int(0.03 * TWILIO_RATE)), talk[shift:shift + n]])[:n]
    return at_dbfs(bandpass(delayed, 250, 3400), -20.0 + (rms_db(talk) - _active_db(talk)))


def _bursts(n: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A cough-like burst of `seconds` every ~1.5 s, each with a click or two around it."""
    out = np.zeros(n)
    at = int(0.5 * TWILIO_RATE)
    while at + int(seconds * TWILIO_RATE) < n - TWILIO_RATE // 2:
        burst = at_dbfs(cough(seconds, rng), float(rng.uniform(-18, -10)))
        out[at:at + len(burst)] += burst
        for _ in range(int(rng.integers(1, 3))):
            c = click(rng) * 10 ** (rng.uniform(-12, -3) / 20)
            where = int(rng.integers(0, n - len(c)))
            out[where:where + len(c)] += c
        at += len(burst) + int(rng.uniform(1.0, 1.8) * TWILIO_RATE)
    return out


def _noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "pink":
        return pink(n, rng)
    if kind == "brown":
        return brown(n, rng)
    if kind == "hum":
        return hum(n, float(rng.choice([50.0, 60.0])), rng)
    return _babble(n, rng)


def build(seed: int = 7) -> list[Clip]:
    rng = np.random.default_rng(seed)
    clips: list[Clip] = []
    floor = lambda n: at_dbfs(pink(n, rng), -60.0)  # noqa: E731 - a quiet line is never digital zero

    # The caller speaks: clean, and under each kind of interference.
    conditions: list[tuple[str, float | None]] = [
        ("clean", None), ("pink", 20), ("pink", 10), ("pink", 5), ("brown", 10), ("hum", 10),
        ("babble", 10), ("echo", None)]
    for i in range(36):
        kind, snr = conditions[i % len(conditions)]
        speech, spans = _line_speech(rng, CALLER_LINES, CALLER_VOICES, count=2)
        n = len(speech)
        labels = speech_labels(speech)
        spans_f = [(a // FRAME, -(-b // FRAME)) for a, b in spans]
        active = _active_db(speech)
        mix = speech + floor(n)
        if kind == "echo":
            mix += _echo(n, rng) * 10 ** (-25 / 20)
            condition = "echo -25 dB under the caller"
        elif kind != "clean":
            assert snr is not None
            mix += at_dbfs(_noise(kind, n, rng), active - snr)
            condition = f"{kind} snr {snr:g} dB"
        else:
            condition = "clean"
        utterances = []
        for a, b in spans_f:  # each line's labelled part: its onset is the first voiced frame
            hit = np.flatnonzero(labels[a:b])
            if len(hit):
                utterances.append((a + int(hit[0]), a + int(hit[-1]) + 1))
        clips.append(Clip(f"speech-{i:02d}", "speech", condition, to_ulaw(mix), labels, utterances))

    # Nobody speaks: nothing here may start a turn.
    n = 12 * TWILIO_RATE
    silent = np.zeros(n // FRAME, dtype=bool)
    for level in (-25, -30, -35):
        clips.append(Clip(f"pink{level}", "noise", f"pink {level} dBFS", to_ulaw(at_dbfs(pink(n, rng), level)),
                          silent))
    for level in (-25, -30):
        clips.append(Clip(f"brown{level}", "noise", f"brown {level} dBFS",
                          to_ulaw(at_dbfs(brown(n, rng), level)), silent))
    clips.append(Clip("white-40", "noise", "white -40 dBFS", to_ulaw(at_dbfs(rng.standard_normal(n), -40)),
                      silent))
    for mains in (50.0, 60.0):
        for level in (-25, -35):
            clips.append(Clip(f"hum{mains:g}{level}", "hum", f"hum {mains:g} Hz {level} dBFS",
                              to_ulaw(at_dbfs(hum(n, mains, rng), level) + floor(n)), silent))
    for ms in (100, 200, 300):
        for k in range(2):
            clips.append(Clip(f"burst{ms}-{k}", "burst", f"burst {ms} ms",
                              to_ulaw(_bursts(n, ms / 1000, rng) + floor(n)), silent))
    for ms in (400, 500):
        clips.append(Clip(f"burst{ms}", "burst long", f"burst {ms} ms",
                          to_ulaw(_bursts(n, ms / 1000, rng) + floor(n)), silent))
    for k in range(4):
        clips.append(Clip(f"echo-25-{k}", "echo", "echo -25 dB", to_ulaw(_echo(n, rng) * 10 ** (-25 / 20)
                                                                       + floor(n)), silent))
    for k in range(2):
        clips.append(Clip(f"echo-15-{k}", "echo loud", "echo -15 dB",
                          to_ulaw(_echo(n, rng) * 10 ** (-15 / 20) + floor(n)), silent))
    clips.append(Clip("babble-35", "babble", "babble -35 dBFS", to_ulaw(at_dbfs(_babble(n, rng), -35)),
                      silent))
    return clips


def load(seed: int = 7, rebuild: bool = False) -> list[Clip]:
    """The corpus, from the cache when it was built before with the same inputs."""
    key = hashlib.sha256(f"{VERSION}\x00{seed}\x00{espeak_version()}".encode()).hexdigest()[:16]
    path = CACHE / f"turn_corpus-{key}.pickle"
    if path.exists() and not rebuild:
        with path.open("rb") as f:
            return [Clip(**fields) for fields in pickle.load(f)]
    clips = build(seed)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        pickle.dump([vars(clip) for clip in clips], f)  # plain data: readable whichever module built it
    tmp.replace(path)
    return clips


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="build (or read back) the turn-taking corpus")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rebuild", action="store_true", help="ignore the cache")
    parser.add_argument("--wav", help="also write each clip as a WAV into this directory, to listen")
    args = parser.parse_args(argv)
    clips = load(args.seed, args.rebuild)
    by_kind: dict[str, list[Clip]] = {}
    for clip in clips:
        by_kind.setdefault(clip.kind, []).append(clip)
    for kind, group in by_kind.items():
        seconds = sum(c.seconds for c in group)
        speech = sum(int(c.speech.sum()) for c in group) * FRAME_S
        lines = sum(len(c.utterances) for c in group)
        print(f"{kind:>11}: {len(group):3d} clips, {seconds:6.1f} s, speech {speech:6.1f} s, lines {lines}")
    if args.wav:
        out = Path(args.wav)
        out.mkdir(parents=True, exist_ok=True)
        for clip in clips:
            with wave.open(str(out / f"{clip.name}.wav"), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(TWILIO_RATE)
                w.writeframes(ulaw_to_pcm(clip.ulaw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
