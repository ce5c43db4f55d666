"""First audio per voice: how soon after a sentence is handed to the speaker its first frame goes
to Twilio, and the voice's time to first byte (TTFB), for Aura by REST, Aura streaming (one
socket per call), OpenAI Realtime (one session per call), and a phrase from the cache.

The real adapters, through their SDKs, talk to the wire-level fakes (tests/fakes/) behind a
delaying TCP proxy that stands for the internet: each byte takes `--one-way-ms` each way, and a
new connection costs `--handshake-rtts` round trips before its first byte (TCP, then TLS 1.3).
The fakes answer after each provider's documented or observed synthesis time (`--aura-ttfb-ms`:
Deepgram reports Aura-2 below 200 ms and ~90 ms at steady state; `--realtime-ttfb-ms`: assumed,
OpenAI publishes no figure) and then stream faster than real time, as the services do.

REST is measured twice: on a warm pooled connection (the sentence right after another) and on a
fresh one (the first sentence of a reply: httpx keeps an idle connection 5 s, and a caller's turn
is usually longer). A streaming voice's connection is opened at call start, so it is always warm.

    python -m bench.voices --sentences 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from bench.common import add_repo_to_path, machine_line, summary, table, write_json

add_repo_to_path()

from services.orchestrator.latency import TurnLatency  # noqa: E402
from services.orchestrator.phrases import PhraseCache  # noqa: E402
from services.orchestrator.speaker import CallVoices, Speaker  # noqa: E402
from services.settings import Settings  # noqa: E402
from services.telephony.media_streams import StreamSender, parse_outbound  # noqa: E402
from services.tts.base import SpeechSynthesizer  # noqa: E402
from services.tts.deepgram_aura import AuraSynthesizer  # noqa: E402
from services.tts.openai_realtime import RealtimeVoice  # noqa: E402
from tests.fakes.deepgram_server import FakeDeepgram  # noqa: E402
from tests.fakes.openai_server import FakeOpenAI  # noqa: E402

KEY = "bench-provider-key"
SENTENCES = ("Yes, we're open tomorrow from nine to five.", "Would you like me to book that for you?",
             "Let me check.", "Tuesday at ten is free with Dr. Patel.", "Is there anything else I can help with?")


class DelayProxy:
    """127.0.0.1:port → target, every chunk held `one_way_s` in each direction (order kept), and
    each new connection held `handshake_rtts` round trips before it carries anything."""

    def __init__(self, target_port: int, one_way_s: float, handshake_rtts: int) -> None:
        self.target_port, self.one_way_s, self.handshake_rtts = target_port, one_way_s, handshake_rtts
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> DelayProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.connections += 1
        await asyncio.sleep(2 * self.one_way_s * self.handshake_rtts)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer),
                                 return_exceptions=True)
        except asyncio.CancelledError:
            pass   # the proxy is closing (asyncio's server callback would trip over a cancelled task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError):
                writer.close()

        delivering = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((time.monotonic() + self.one_way_s, data))
        except OSError:
            pass
        finally:
            queue.put_nowait((0.0, b""))
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await delivering


async def first_audio(voices: CallVoices, text: str) -> tuple[float, float | None]:
    """(ms from `say` to the first media message sent, the voice's TTFB in ms or None)."""
    sent_at: list[float] = []

    async def send_text(message: str) -> None:
        if not sent_at and parse_outbound(message).event == "media":
            sent_at.append(time.monotonic())

    latency = TurnLatency()
    speaker = Speaker(voices, StreamSender(send_text, "MZbench"), 1, latency)
    said = time.monotonic()
    speaker.say(text)
    speaker.finish()
    await speaker.run()
    ttfb = None
    if latency.tts_first_at is not None and latency.tts_request_at is not None:
        ttfb = (latency.tts_first_at - latency.tts_request_at) * 1000
    return (sent_at[0] - said) * 1000, ttfb


@contextlib.asynccontextmanager
async def aura(args: argparse.Namespace) -> AsyncIterator[tuple[FakeDeepgram, DelayProxy]]:
    async with FakeDeepgram(api_key=KEY) as fake, \
            DelayProxy(fake.port, args.one_way_ms / 1000, args.handshake_rtts) as proxy:
        fake.speak_first_byte_delay_s = args.aura_ttfb_ms / 1000
        fake.speak_ws_first_audio_delay_s = args.aura_ttfb_ms / 1000
        fake.speak_bytes_per_s = fake.speak_ws_bytes_per_s = 8000 * args.faster_than_real_time
        yield fake, proxy


@contextlib.asynccontextmanager
async def openai_realtime(args: argparse.Namespace) -> AsyncIterator[tuple[FakeOpenAI, DelayProxy]]:
    async with FakeOpenAI(api_key=KEY) as fake, \
            DelayProxy(fake.port, args.one_way_ms / 1000, args.handshake_rtts) as proxy:
        fake.realtime.first_audio_delay_s = args.realtime_ttfb_ms / 1000
        yield fake, proxy


def aura_settings(proxy: DelayProxy, streaming: bool) -> Settings:
    return Settings(_env_file=None, deepgram_api_key=KEY, deepgram_base_url=proxy.url,  # type: ignore[call-arg]
                    deepgram_tts_streaming=streaming)


async def measure(name: str, voice: Callable[[], SpeechSynthesizer], n: int,
                  phrases: PhraseCache | None = None) -> dict[str, Any]:
    """`n` sentences, each said by `voice()` (the same voice, or a new one per sentence)."""
    audio, ttfb = [], []
    for i in range(n):
        first, first_byte = await first_audio(CallVoices([voice()], phrases=phrases), SENTENCES[i % len(SENTENCES)])
        audio.append(first)
        if first_byte is not None:
            ttfb.append(first_byte)
    a, t = summary(audio), summary(ttfb)
    return {"voice": name, "n": n, "first_audio_p50": a["p50"], "first_audio_p95": a["p95"],
            "ttfb_p50": t["p50"], "ttfb_p95": t["p95"]}


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    async with aura(args) as (fake, proxy):
        rest = AuraSynthesizer(aura_settings(proxy, streaming=False))
        await first_audio(CallVoices([rest]), "Warming up.")   # one pooled connection
        rows.append(await measure("Aura REST, warm connection", lambda: rest, args.sentences))
        await rest.close()

        fresh: list[AuraSynthesizer] = []

        def new_client() -> AuraSynthesizer:   # the pool's idle connection expired (httpx: after 5 s)
            fresh.append(AuraSynthesizer(aura_settings(proxy, streaming=False)))
            return fresh[-1]
        rows.append(await measure("Aura REST, new connection", new_client, args.sentences))
        for voice in fresh:
            await voice.close()

        process = AuraSynthesizer(aura_settings(proxy, streaming=True))
        stream = process.for_call()
        await first_audio(CallVoices([stream]), "Warming up.")   # the call's socket, opened at call start
        rows.append(await measure("Aura streaming (socket per call)", lambda: stream, args.sentences))
        await stream.close()

        phrases = PhraseCache()
        for text in SENTENCES:
            await phrases.get(process, text)
        rows.append(await measure("phrase cache hit", lambda: process, args.sentences, phrases=phrases))
        await process.close()
    async with openai_realtime(args) as (fake, proxy):
        realtime = RealtimeVoice(Settings(_env_file=None, openai_api_key=KEY,  # type: ignore[call-arg]
                                          openai_base_url=f"{proxy.url}/v1"))
        session = realtime.for_call()
        await first_audio(CallVoices([session]), "Warming up.")   # the call's session, opened at call start
        rows.append(await measure("OpenAI Realtime (session per call)", lambda: session, args.sentences))
        await session.close()
        await realtime.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=30, help="sentences per voice")
    parser.add_argument("--one-way-ms", type=float, default=20.0, help="network delay each way")
    parser.add_argument("--handshake-rtts", type=int, default=2, help="round trips to open a connection")
    parser.add_argument("--aura-ttfb-ms", type=float, default=150.0, help="Aura's synthesis before first audio")
    parser.add_argument("--realtime-ttfb-ms", type=float, default=350.0, help="OpenAI Realtime's, assumed")
    parser.add_argument("--faster-than-real-time", type=float, default=4.0, help="audio rate over real time")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 sentences each")
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args()
    if args.quick:
        args.sentences = 3
    print(machine_line())
    rows = asyncio.run(run(args))
    print(table(rows, [("voice", "voice"), ("n", "n"), ("first_audio_p50", "first audio p50 ms"),
                       ("first_audio_p95", "p95"), ("ttfb_p50", "TTFB p50 ms"), ("ttfb_p95", "p95")]))
    write_json(args.json, "voices", vars(args), rows)


if __name__ == "__main__":
    main()
