"""Does Zylin stop for real interruptions only, and how fast? Corpus clips played over a reply.

    python -m bench.barge_in [--vad neural,energy] [--interim-ms 300,500] [--json PATH]

Each clip is fed, one 20 ms frame at a time, to a call's real turn-taking: the `TurnDetector`
with the VAD the server builds (`build_vad`, default settings), while Zylin is audible throughout.
A recognizer stand-in gives a caller line's words as Deepgram's streaming results come: an
interim result every `--interim-ms` of speech from the line's onset (the words said by then, at
~15 characters a second), the final one 400 ms after its end; sound that is no caller line
gets no words. Time is the stream's (frames), so the figures do not depend on this machine;
a `clear` then takes one network trip to Twilio, on top.

Clips: the turn corpus's interference (bench/turn_corpus.py: noise and hum to -25 dBFS, bursts,
Zylin's echo, babble), backchannels ("mm-hm", "okay", "right"...) and real interruptions (caller
lines, "wait", "sorry") spoken by espeak-ng in six voices, clean, under pink noise and over echo.

Figures: false barge-ins per minute of Zylin speech on interference; backchannels that stopped
Zylin; real interruptions missed; reaction time from the line's labelled onset to the barge-in
decision (p50, p95, max) and the share within 400 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
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
    _echo,
    at_dbfs,
    espeak,
    espeak_available,
    load,
    pink,
    rms_db,
    speech_labels,
    to_ulaw,
)
from services.asr.base import Transcript
from services.audio.codec import TWILIO_RATE
from services.orchestrator.turns import INTERRUPT_MIN_SPEECH_MS, TurnDetector
from services.providers import build_vad
from services.settings import Settings

BACKCHANNELS = ["Mm-hmm.", "Uh-huh.", "Okay.", "Yeah.", "Right.", "I see.", "Got it.", "Sure."]
INTERRUPTIONS = [
    "How much is a cleaning?", "Is there parking near the office?", "Can I speak to someone about my bill?",
    "I need to cancel my appointment.", "My name is Maria Lopez.", "Actually, can we make it Thursday?",
    "Wait.", "Sorry?", "Hold on.", "No, no.",
]
CONDITIONS = ("clean", "pink 10 dB", "echo -25 dB")
CHARS_PER_S = 15.0
FINAL_AFTER_S = 0.4
TARGET_MS = 400


@dataclass
class Spoken:
    """A line over Zylin's voice: its clip, its words and its labelled onset and end (frames)."""
    clip: Clip
    text: str
    onset: int
    end: int


class Hooks:
    """The engine, as the detector sees it: audible until a barge-in, or throughout (`rearm`: each
    false barge-in on interference is counted, as if Zylin had said its next line at once)."""

    def __init__(self, rearm: bool = False) -> None:
        self.rearm = rearm
        self.audible = True
        self.barge_ins: list[tuple[int, str]] = []
        self.ignored: list[str] = []
        self.frame = 0

    def speaking_since(self) -> float | None:
        return 0.0 if self.audible else None

    def taking_turns(self) -> bool:
        return True

    def on_caller_active(self) -> None:
        pass

    async def on_barge_in(self, why: str) -> None:
        self.barge_ins.append((self.frame, why))
        self.audible = self.rearm

    def on_interruption_ignored(self, why: str, words: str, speech_ms: int) -> None:
        self.ignored.append(why)

    async def finalize_recognizer(self) -> None:
        pass

    def on_turn(self, text: str, speech_end: float, closed_at: float) -> None:
        self.audible = True  # Zylin answers: the next sound is over its voice again


def transcripts(line: Spoken | None, interim_frames: int) -> dict[int, list[Transcript]]:
    """What the recognizer stand-in says, by the frame after which it arrives."""
    if line is None:
        return {}
    out: dict[int, list[Transcript]] = {}
    words = line.text.split()
    expected_s = max(len(line.text) / CHARS_PER_S, 0.3)
    start_s = line.onset * FRAME_S
    at = line.onset + interim_frames
    while at < line.end:
        shown = max(1, min(len(words), int(len(words) * (at - line.onset) * FRAME_S / expected_s)))
        out.setdefault(at, []).append(Transcript(" ".join(words[:shown]), is_final=False, speech_final=False,
                                                 start_s=start_s, end_s=at * FRAME_S))
        at += interim_frames
    final_at = line.end + round(FINAL_AFTER_S / FRAME_S)
    out.setdefault(final_at, []).append(Transcript(line.text, is_final=True, speech_final=True,
                                                   start_s=start_s, end_s=line.end * FRAME_S))
    return out


async def play(clip: Clip, line: Spoken | None, vad_name: str, interim_ms: int, min_speech_ms: int) -> Hooks:
    hooks = Hooks(rearm=line is None)
    turns = TurnDetector(build_vad(Settings(_env_file=None, vad=vad_name)), hooks, person_request="",
                         min_speech_ms=min_speech_ms)
    said = transcripts(line, max(1, interim_ms // 20))
    for i, frame in enumerate(clip.pcm_frames(), start=1):
        hooks.frame = i
        work = turns.on_frame(frame, i * FRAME_S)
        if work is not None:
            await work
        for event in said.get(i, ()):
            await turns.on_transcript(event)
    return hooks


def spoken_clips(lines: list[str], kind: str, seed: int = 11) -> list[Spoken]:
    """Each line in each voice and condition: 0.6 s of line noise, the line, 1.6 s more."""
    rng = np.random.default_rng(seed)
    out: list[Spoken] = []
    for text in lines:
        for v, (voice, rate) in enumerate(CALLER_VOICES):
            condition = CONDITIONS[v % len(CONDITIONS)]
            said = espeak(text, voice, rate)
            said = at_dbfs(said, float(rng.uniform(-26, -16)) + rms_db(said) - _active_db(said))
            lead, tail = np.zeros(int(0.6 * TWILIO_RATE)), np.zeros(int(1.6 * TWILIO_RATE))
            clean = np.concatenate([lead, said, tail])
            clean = clean[:len(clean) - len(clean) % FRAME]
            n = len(clean)
            mix = clean + at_dbfs(pink(n, rng), -60.0)
            if condition.startswith("pink"):
                mix += at_dbfs(pink(n, rng), _active_db(said) - 10)
            elif condition.startswith("echo"):
                mix += _echo(n, rng) * 10 ** (-25 / 20)
            labels = speech_labels(clean)
            voiced = np.flatnonzero(labels)
            clip = Clip(f"{kind}-{text}-{voice}", kind, condition, to_ulaw(mix), labels)
            out.append(Spoken(clip, text, int(voiced[0]), int(voiced[-1]) + 1))
    return out


async def evaluate(vad_name: str, interim_ms: int, min_speech_ms: int, interference: list[Clip],
                   backchannels: list[Spoken], interruptions: list[Spoken]) -> dict[str, Any]:
    false_by_kind: dict[str, list[int]] = {}
    seconds_by_kind: dict[str, float] = {}
    for clip in interference:
        hooks = await play(clip, None, vad_name, interim_ms, min_speech_ms)
        false_by_kind.setdefault(clip.kind, []).append(len(hooks.barge_ins))
        seconds_by_kind[clip.kind] = seconds_by_kind.get(clip.kind, 0.0) + clip.seconds
    stopped_by_backchannel = 0
    for line in backchannels:
        hooks = await play(line.clip, line, vad_name, interim_ms, min_speech_ms)
        stopped_by_backchannel += bool(hooks.barge_ins)
    reactions: list[float] = []
    missed = 0
    whys: dict[str, int] = {}
    for line in interruptions:
        hooks = await play(line.clip, line, vad_name, interim_ms, min_speech_ms)
        if not hooks.barge_ins:
            missed += 1
            continue
        frame, why = hooks.barge_ins[0]
        reactions.append((frame - line.onset + 1) * FRAME_S * 1000)
        whys[str(why)] = whys.get(str(why), 0) + 1
    minutes = sum(seconds_by_kind.values()) / 60
    return {
        "vad": vad_name, "interim_ms": interim_ms, "min_speech_ms": min_speech_ms,
        "backchannel_ms_p50": percentile([(b.end - b.onset) * FRAME_S * 1000 for b in backchannels], 50),
        "false_per_min": sum(map(sum, false_by_kind.values())) / minutes,
        "false_by_kind": {k: round(sum(v) / (seconds_by_kind[k] / 60), 2) for k, v in false_by_kind.items()},
        "backchannels": len(backchannels), "backchannel_stops": stopped_by_backchannel,
        "interruptions": len(interruptions), "missed": missed,
        "reaction_p50_ms": percentile(reactions, 50), "reaction_p95_ms": percentile(reactions, 95),
        "reaction_max_ms": max(reactions) if reactions else None,
        "within_target": sum(r <= TARGET_MS for r in reactions) / len(reactions) if reactions else None,
        "why": whys,
    }


def render(results: list[dict[str, Any]]) -> str:
    rows = [{**r, "within_target": None if r["within_target"] is None else 100 * r["within_target"],
             "stops": f"{r['backchannel_stops']}/{r['backchannels']}",
             "miss": f"{r['missed']}/{r['interruptions']}"} for r in results]
    out = [table(rows, [("vad", "VAD"), ("min_speech_ms", "min speech ms"), ("interim_ms", "interim every ms"),
                        ("false_per_min", "false/min"),
                        ("stops", "backchannels that stopped Zylin"), ("miss", "interruptions missed"),
                        ("reaction_p50_ms", "reaction p50 ms"), ("reaction_p95_ms", "p95 ms"),
                        ("reaction_max_ms", "max ms"), ("within_target", f"% ≤ {TARGET_MS} ms")])]
    out.append("")
    for r in results:
        kinds = ", ".join(f"{k} {v:g}" for k, v in r["false_by_kind"].items())
        out.append(f"{r['vad']}, {r['min_speech_ms']} ms, interims every {r['interim_ms']} ms: false barge-ins "
                   f"per minute by kind: {kinds}; why Zylin stopped: {r['why']}")
    return "\n".join(out)


@dataclass
class Corpus:
    interference: list[Clip] = field(default_factory=list)
    backchannels: list[Spoken] = field(default_factory=list)
    interruptions: list[Spoken] = field(default_factory=list)


def corpus() -> Corpus:
    return Corpus([c for c in load() if c.kind != "speech"], spoken_clips(BACKCHANNELS, "backchannel"),
                  spoken_clips(INTERRUPTIONS, "interruption"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="false and missed barge-ins, and reaction time")
    parser.add_argument("--vad", default="neural,energy")
    parser.add_argument("--interim-ms", default="300,500", help="the recognizer's interim result period(s)")
    parser.add_argument("--min-speech-ms", default=str(INTERRUPT_MIN_SPEECH_MS),
                        help="INTERRUPT_MIN_SPEECH_MS value(s)")
    parser.add_argument("--json")
    parser.add_argument("--quick", action="store_true", help="a smoke run: a few clips of each kind")
    args = parser.parse_args(argv)
    if not espeak_available():
        print("espeak-ng is needed (apt-get install espeak-ng)")
        return 1
    data = corpus()
    if args.quick:
        data = Corpus(data.interference[::8], data.backchannels[::12], data.interruptions[::12])
    minutes = sum(c.seconds for c in data.interference) / 60
    spans = [(b.end - b.onset) * FRAME_S * 1000 for b in data.backchannels]
    print(f"{machine_line()}\ninterference {minutes:.1f} min of Zylin speech, {len(data.backchannels)} "
          f"backchannels (p50 {percentile(spans, 50):.0f} ms long), {len(data.interruptions)} interruptions\n")
    results = [asyncio.run(evaluate(vad, int(ms), int(least), data.interference, data.backchannels,
                                    data.interruptions))
               for vad in args.vad.split(",") for least in args.min_speech_ms.split(",")
               for ms in args.interim_ms.split(",")]
    print(render(results))
    write_json(args.json, "barge_in", args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
