"""The platform gap (end of speech -> first reply audio sent) with Nova-3 answering after the turn
closes, and with Flux preparing the reply on EagerEndOfTurn.

    python -m bench.flux_eager [--calls 5] [--quick] [--json PATH]

Everything runs in this process on 127.0.0.1: the Zylin server, the fake Deepgram (tests/fakes)
in script mode, the offline brain and the mock voice, given Twilio's published component figures:
speech recognition 350 ms (Nova-3: the local VAD's 350 ms end-of-speech silence, answered by
the fake's Finalize at once, and endpointing 350 ms; Flux: EndOfTurn at eot_threshold 0.7 on
the fake's confidence of silence / 0.5 s = 350 ms, EagerEndOfTurn at 0.5 = 250 ms), LLM first
token 375 ms, TTS first byte 100 ms. Each call says three lines at real time.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.common import machine_line, percentile, table, write_json
from services.simulator.caller import CallerLine
from tests.conftest import running_zylin
from tests.factories import PROVIDER_KEY
from tests.fakes.deepgram_server import FakeDeepgram

LINES = ["What are your opening hours?", "How much is a cleaning?", "Do you have parking?"]
FIGURES = dict(mock_llm_delay_ms=375.0, mock_tts_delay_ms=100.0, vad="energy", vad_end_silence_ms=350)
MODES: dict[str, dict[str, Any]] = {
    "nova-3, serial": dict(deepgram_model="nova-3", deepgram_endpointing_ms=350),
    "flux, no eager": dict(deepgram_model="flux-general-en", flux_eot_threshold=0.7, flux_eager_eot_threshold=0),
    "flux, eager": dict(deepgram_model="flux-general-en", flux_eot_threshold=0.7, flux_eager_eot_threshold=0.5),
}


async def measure(mode: dict[str, Any], calls: int) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = []
    async with FakeDeepgram(api_key=PROVIDER_KEY, script=LINES * calls, full_confidence_s=0.5) as deepgram:
        settings = dict(use_mock_streaming=False, asr_provider="deepgram", llm_provider="mock",
                        tts_provider="mock", deepgram_api_key=PROVIDER_KEY, deepgram_base_url=deepgram.url,
                        **FIGURES, **mode)
        async with running_zylin(**settings) as zylin:
            for _ in range(calls):
                result = await zylin.caller(speed=1.0).call([CallerLine(t) for t in LINES], mock_script=False)
                record = await zylin.recorder.wait_ended(result.call_sid)
                for turn in record["turns"]:
                    if turn.speaker == "caller" and turn.latency.first_audio_ms is not None:
                        turns.append({"first_audio_ms": turn.latency.first_audio_ms,
                                      "asr_ms": turn.latency.asr_ms, "speculative": turn.latency.speculative})
    return turns


async def main(calls: int, json_path: str | None) -> None:
    rows, raw = [], {}
    for name, mode in MODES.items():
        turns = await measure(mode, calls)
        raw[name] = turns
        gaps = [t["first_audio_ms"] for t in turns]
        rows.append({"mode": name, "turns": len(turns), "speculative": sum(t["speculative"] for t in turns),
                     "p50": percentile(gaps, 50), "p95": percentile(gaps, 95), "max": max(gaps, default=None)})
    print(machine_line())
    print(table(rows, [("mode", "mode"), ("turns", "turns"), ("speculative", "speculative"),
                       ("p50", "gap p50 ms"), ("p95", "gap p95 ms"), ("max", "max ms")]))
    write_json(json_path, "flux_eager", {"calls": calls}, {"rows": rows, "turns": raw, "figures": FIGURES,
                                                          "modes": MODES})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one call per mode")
    parser.add_argument("--json")
    args = parser.parse_args()
    asyncio.run(main(1 if args.quick else args.calls, args.json))
