"""Does Zylin wait for the end of the caller's sentence, and how soon does it take the turn then?

    python -m bench.turn_ends [--vad neural,energy] [--json PATH]

Caller lines spoken by espeak-ng in six voices (bench/turn_corpus.py), each either whole or with a
pause in the middle ("I'd like to book, um ... a cleaning on Thursday"), fed one 20 ms frame at a
time to a call's real turn-taking (the `TurnDetector` with the VAD the server builds, Zylin
silent). The recognizer stand-in is Nova-3 as Zylin drives it: when the VAD hears the end of
speech, Zylin asks Deepgram to finalize, and the final result (the words of that stretch of
speech) comes `--finalize-ms` later. With `filler_words=true` (what Zylin asks for) "uh" and "um"
are in those words; without it Deepgram leaves them out, as it does by default.

Figures per VAD and filler setting: premature turn ends (a paused line answered after its first
half), for pauses up to a second (voice to voice) and longer ones, and the end-of-turn latency
(the line's last voiced frame -> the turn closed: the VAD's end silence and the finalize trip). Time is the
stream's (frames): the figures do not depend on this machine. Flux decides turn ends with its own
model, which no offline stand-in reproduces: it is not measured here.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.common import machine_line, percentile, table, write_json
from bench.turn_corpus import (
    CALLER_VOICES,
    FRAME,
    FRAME_S,
    Clip,
    _active_db,
    at_dbfs,
    espeak,
    pink,
    rms_db,
    speech_labels,
    to_ulaw,
)
from services.asr.base import Transcript
from services.audio.codec import TWILIO_RATE
from services.orchestrator.turns import TurnDetector
from services.providers import build_vad
from services.settings import Settings
from tests.fakes.deepgram_server import without_fillers

PAUSED = [   # (first half, second half): the caller stops to think between them
    ("I'd like to book, um,", "a cleaning on Thursday."),
    ("I was wondering, uh,", "do you take new patients?"),
    ("Is it possible, um,", "to come in on Saturday?"),
    ("Can I move my appointment to", "Friday afternoon?"),
    ("My name is", "Maria Lopez."),
    ("I need a cleaning and", "a checkup for my son."),
]
WHOLE = ["How much is a cleaning?", "What are your opening hours?", "I'd like to cancel my appointment.",
         "Do you have anything free tomorrow morning?"]
PAUSES_S = (0.4, 0.6, 0.9)   # between the halves' audio; espeak adds its own silence at each edge
SHORT_PAUSE_MS = 1000        # voice to voice: what TURN_HOLD_UNFINISHED_MS=800 is meant to cover


@dataclass
class Line:
    clip: Clip
    parts: list[str]           # what the caller says, in stretches of speech
    starts: list[int]          # each stretch's first frame (of its audio)
    end: int                   # the last voiced frame + 1

    @property
    def pause_ms(self) -> float:
        """The silence the caller leaves mid-line, voice to voice (espeak's own lead-in and
        trailing silence included): what the turn-taking has to wait through."""
        if len(self.parts) < 2:
            return 0.0
        voiced = np.flatnonzero(self.clip.speech)
        before, after = voiced[voiced < self.starts[1]], voiced[voiced >= self.starts[1]]
        return float((after[0] - before[-1] - 1) * FRAME_S * 1000)


class Hooks:
    """The engine as the detector sees it: silent, asking for a final result on each VAD end."""

    def __init__(self) -> None:
        self.frame = 0
        self.finalize_at: list[int] = []
        self.turns: list[tuple[str, float]] = []   # (text, closed at: stream time, s)

    def speaking_since(self) -> float | None:
        return None

    def taking_turns(self) -> bool:
        return True

    def on_caller_active(self) -> None:
        pass

    async def on_barge_in(self, why: str) -> None:
        pass

    def on_interruption_ignored(self, why: str, words: str, speech_ms: int) -> None:
        pass

    async def finalize_recognizer(self) -> None:
        self.finalize_at.append(self.frame)

    def on_turn(self, text: str, speech_end: float, closed_at: float) -> None:
        self.turns.append((text, self.frame * FRAME_S))   # (closed_at is the wall clock's)


def spoken(parts: list[str], voice: str, rate: int, pause_s: float, rng: np.random.Generator) -> Line:
    """The parts said one after another, `pause_s` apart, after 0.6 s of line noise."""
    pieces: list[np.ndarray] = [np.zeros(int(0.6 * TWILIO_RATE))]
    starts: list[int] = []
    at = len(pieces[0])
    level = float(rng.uniform(-26, -16))
    for i, text in enumerate(parts):
        if i:
            pieces.append(np.zeros(int(pause_s * TWILIO_RATE)))
            at += len(pieces[-1])
        said = espeak(text, voice, rate)
        pieces.append(at_dbfs(said, level + rms_db(said) - _active_db(said)))
        starts.append(at // FRAME)
        at += len(said)
    pieces.append(np.zeros(int(2.5 * TWILIO_RATE)))
    clean = np.concatenate(pieces)
    clean = clean[:len(clean) - len(clean) % FRAME]
    labels = speech_labels(clean)
    mix = clean + at_dbfs(pink(len(clean), rng), -60.0)
    clip = Clip(f"{'|'.join(parts)}-{voice}-{pause_s}", "line", "clean", to_ulaw(mix), labels)
    return Line(clip, parts, starts, int(np.flatnonzero(labels)[-1]) + 1)


async def play(line: Line, vad_name: str, fillers: bool, finalize_frames: int) -> Hooks:
    settings = Settings(_env_file=None, vad=vad_name)
    hooks = Hooks()
    turns = TurnDetector(build_vad(settings), hooks, person_request="", min_speech_ms=settings.interrupt_min_speech_ms,
                         hold_unfinished_ms=settings.turn_hold_unfinished_ms)
    answered = 0   # the stretches whose final result has been sent
    for i, frame in enumerate(line.clip.pcm_frames(), start=1):
        hooks.frame = i
        work = turns.on_frame(frame, i * FRAME_S)
        if work is not None:
            await work
        due = [f for f in hooks.finalize_at if f + finalize_frames == i]
        for _ in due:   # the words of the stretches said by the finalize, not answered yet
            said = [n for n, start in enumerate(line.starts) if start < i - finalize_frames]
            words = " ".join(line.parts[n] for n in said[answered:])
            answered = len(said)
            if not fillers:
                words = without_fillers(words)
            if words:
                await turns.on_transcript(Transcript(words, is_final=True, speech_final=True,
                                                     start_s=line.starts[said[0]] * FRAME_S, end_s=i * FRAME_S))
    return hooks


def corpus(seed: int = 13) -> tuple[list[Line], list[Line]]:
    rng = np.random.default_rng(seed)
    paused = [spoken(list(p), voice, rate, pause, rng) for p in PAUSED for voice, rate in CALLER_VOICES
              for pause in PAUSES_S]
    whole = [spoken([text], voice, rate, 0.0, rng) for text in WHOLE for voice, rate in CALLER_VOICES]
    return paused, whole


async def evaluate(vad_name: str, fillers: bool, finalize_ms: int, paused: list[Line],
                   whole: list[Line]) -> dict[str, Any]:
    frames = max(1, finalize_ms // 20)
    short = [line for line in paused if line.pause_ms <= SHORT_PAUSE_MS]
    premature = {"short": 0, "long": 0}
    latency = []
    for line in paused + whole:
        hooks = await play(line, vad_name, fillers, frames)
        if len(line.parts) > 1 and len(hooks.turns) != 1:
            premature["short" if line in short else "long"] += 1
        if hooks.turns:
            latency.append((hooks.turns[-1][1] - line.end * FRAME_S) * 1000)
    return {"vad": vad_name, "filler_words": fillers,
            "short": f"{premature['short']} / {len(short)}",
            "long": f"{premature['long']} / {len(paused) - len(short)}",
            "whole_lines": len(whole), "eot_p50": percentile(latency, 50), "eot_p95": percentile(latency, 95),
            "eot_max": max(latency) if latency else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vad", default="neural,energy")
    parser.add_argument("--finalize-ms", type=int, default=100, help="finalize -> final result")
    parser.add_argument("--quick", action="store_true", help="one voice")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    paused, whole = corpus()
    if args.quick:
        paused, whole = paused[::12], whole[::6]
    rows = [asyncio.run(evaluate(vad, fillers, args.finalize_ms, paused, whole))
            for vad in args.vad.split(",") for fillers in (True, False)]
    print(machine_line())
    print(table(rows, [("vad", "VAD"), ("filler_words", "filler_words"),
                       ("short", "premature, pause <= 1 s"), ("long", "premature, pause > 1 s"),
                       ("whole_lines", "whole lines"),
                       ("eot_p50", "end of turn p50 ms"), ("eot_p95", "p95"), ("eot_max", "max")]))
    write_json(args.json, "turn_ends", vars(args), rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
