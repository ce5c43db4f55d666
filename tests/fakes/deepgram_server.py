"""A local Deepgram: the live transcription WebSocket (`GET /v1/listen`), Flux (`GET /v2/listen`,
tests/fakes/deepgram_flux.py) and Aura (`POST /v1/speak`, and the `GET /v1/speak` WebSocket in
tests/fakes/deepgram_speak.py) on one port, as Deepgram serves them.

Listen: records the query it was opened with, every message received (binary audio, KeepAlive /
Finalize / CloseStream JSON), and answers with Results / SpeechStarted / UtteranceEnd / Metadata
shaped as Deepgram documents them. A test can drive it by hand (`session.send_results(...)`), or
give it a script: it then "hears" speech by energy and answers each utterance with the next line,
with interim results, endpointing and utterance ends as the query asked. It behaves like Deepgram
where it matters: Finalize flushes with `from_finalize: true` only when there is audio not yet
transcribed (Deepgram "may" answer it; `answer_finalize=False` never does), CloseStream flushes,
sends Metadata and closes 1000, ten seconds (setting) with neither audio nor a text message closes
1011, an encoding it does not support is refused with 400 at the upgrade. It can drop a
connection (abruptly or with a close code), refuse new ones, or stall their upgrades
(`listen_upgrade_hangs`: TCP accepted, then neither an answer nor a close, even after the client's
half-close, as from a server that has stopped or a path that went dead).

Speak: returns mu-law (or linear16) bytes for the text, streamed in odd-sized chunks; the speak
WebSocket streams the same bytes per Flush.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import uuid
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from tests.fakes.server import FakeServer, RecordedRequest, StreamRecord, json_response, stream_chunks

try:  # stdlib up to 3.12, the audioop-lts package from 3.13
    import audioop
except ModuleNotFoundError:  # pragma: no cover
    import audioop_lts as audioop  # type: ignore[no-redef]

ENCODINGS = {"linear16", "linear32", "flac", "alaw", "mulaw", "amr-nb", "amr-wb", "opus",
             "ogg-opus", "speex", "g729"}
MODEL_INFO = {"name": "general-nova-3", "version": "2025-01-01.0", "arch": "nova-3"}
MODEL_UUID = "40bd3654-e622-47c4-a111-63a61b23bd5f"
NET0001 = ("Deepgram did not receive audio data or a text message within the timeout window. "
           "See https://dpgr.am/net0001")


class ListenSession:
    """One live-transcription WebSocket as the fake sees it."""

    def __init__(self, fake: FakeDeepgram, request: RecordedRequest, ws: web.WebSocketResponse,
                 transport: asyncio.Transport | None) -> None:
        self.fake = fake
        self.request = request
        self.query = request.query
        self.headers = request.headers
        self.request_id = str(uuid.uuid4())
        self.messages: list[bytes | dict] = []     # everything received, in order
        self.audio = bytearray()
        self.controls: list[str] = []              # types of the JSON messages received
        self.sent: list[dict] = []                 # everything we answered
        self.closed = asyncio.Event()
        self.close_code: int | None = None         # the code we closed with, or received
        self.finalize_transcript = ""              # what a Finalize flushes in manual mode
        self._audio_at_final = 0                   # len(audio) when the last final result went out
        self._ws = ws
        self._transport = transport
        self._closing = False                      # our close handshake is under way
        self._changed = asyncio.Condition()
        self._ears = _Ears(self) if fake.script is not None else None

    # --- the query ------------------------------------------------------------------
    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    @property
    def sample_rate(self) -> int:
        return int(self.param("sample_rate") or 16000)

    @property
    def bytes_per_sample(self) -> int:
        return 1 if self.param("encoding") in ("mulaw", "alaw") else 2

    @property
    def audio_seconds(self) -> float:
        return len(self.audio) / (self.sample_rate * self.bytes_per_sample)

    # --- waiting (tests await these instead of sleeping) ------------------------------
    async def wait_until(self, predicate, timeout: float = 5.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    async def wait_audio_bytes(self, count: int, timeout: float = 5.0) -> None:
        await self.wait_until(lambda: len(self.audio) >= count, timeout)

    async def wait_control(self, kind: str, count: int = 1, timeout: float = 5.0) -> None:
        await self.wait_until(lambda: self.controls.count(kind) >= count, timeout)

    async def wait_closed(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self.closed.wait(), timeout)

    # --- answering ----------------------------------------------------------------------
    async def send_json(self, message: dict) -> None:
        if self.closed.is_set() or self._closing:
            return
        if message.get("type") == "Results" and message.get("is_final"):
            self._audio_at_final = len(self.audio)  # everything so far is transcribed
        self.sent.append(message)
        try:
            await self._ws.send_str(json.dumps(message))
        except ConnectionResetError:
            pass  # the client is gone; the receiving side ends the session
        await self._notify()

    async def send_results(self, transcript: str, *, is_final: bool = True, speech_final: bool = False,
                           start: float = 0.0, duration: float | None = None, confidence: float = 0.98,
                           from_finalize: bool = False) -> None:
        words = transcript.split()
        if duration is None:
            duration = max(0.3 * len(words), 0.02)
        await self.send_json(results_message(transcript, is_final=is_final, speech_final=speech_final,
                                             start=start, duration=duration, confidence=confidence,
                                             from_finalize=from_finalize, request_id=self.request_id))

    async def send_speech_started(self, timestamp: float) -> None:
        await self.send_json({"type": "SpeechStarted", "channel": [0], "timestamp": timestamp})

    async def send_utterance_end(self, last_word_end: float) -> None:
        await self.send_json({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": last_word_end})

    async def send_metadata(self) -> None:
        await self.send_json({
            "type": "Metadata", "transaction_key": "deprecated", "request_id": self.request_id,
            "sha256": hashlib.sha256(bytes(self.audio)).hexdigest(),
            "created": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "duration": round(self.audio_seconds, 3), "channels": 1, "models": [MODEL_UUID],
            "model_info": {MODEL_UUID: MODEL_INFO},
        })

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """A clean close handshake from the server side: our close frame, the client's, then TCP."""
        if self.closed.is_set() or self._closing:
            return
        self._closing = True
        self.close_code = code
        try:
            await self._ws.close(code=code, message=reason.encode())
        finally:
            self._end()

    async def drop(self, code: int | None = None) -> None:
        """Lose the connection: with a close frame carrying `code` (1011 is what Deepgram sends on
        its own errors), or with no close frame at all (code None), as a network drop would."""
        if code is not None:
            await self.close(code, "fake drop")
            return
        self.close_code = 1006
        if self._transport is not None:
            self._transport.abort()
        self._end()

    # --- the connection ----------------------------------------------------------------
    async def run(self) -> None:
        """Receive until the connection ends; Deepgram's idle timeout closes it with 1011."""
        loop = asyncio.get_running_loop()
        last_message = loop.time()
        try:
            while not self.closed.is_set() and not self._closing:
                wait = self.fake.idle_timeout_s - (loop.time() - last_message)
                if wait <= 0:
                    await self.close(1011, NET0001)
                    break
                try:
                    message = await self._ws.receive(timeout=wait)
                except TimeoutError:
                    continue
                if message.type == WSMsgType.BINARY:
                    await self._on_audio(message.data)
                elif message.type == WSMsgType.TEXT:
                    await self._on_text(message.data)
                else:  # the client's close (aiohttp answered it), our own close from another task, or EOF
                    if message.type == WSMsgType.CLOSE and self.close_code is None:
                        self.close_code = message.data or 1005
                    break
                last_message = loop.time()
            if self._closing:  # a close() from a test: let its handshake finish before the handler returns
                await self.closed.wait()
        finally:
            self._end()

    async def _on_audio(self, data: bytes) -> None:
        self.messages.append(data)
        self.audio += data
        await self._notify()
        if self._ears is not None:
            await self._ears.hear(data)

    async def _on_text(self, data: str) -> None:
        try:
            message = json.loads(data)
            kind = message["type"]
        except (ValueError, KeyError, TypeError):
            await self.send_json({"type": "Error", "variant": "SchemaError",
                                  "description": "could not parse the client message", "message": data})
            return
        self.messages.append(message)
        self.controls.append(kind)
        await self._notify()
        if kind == "Finalize":
            await self._finalize()
        elif kind == "CloseStream":
            await self._finalize(closing=True)
            await self.send_metadata()
            await self.close(1000)
        elif kind != "KeepAlive":
            await self.send_json({"type": "Error", "variant": "SchemaError",
                                  "description": f"unknown message type {kind!r}", "message": data})

    @property
    def untranscribed(self) -> bool:
        """Audio or words waiting for a final result: what a Finalize can flush (manual mode)."""
        return bool(self.finalize_transcript) or len(self.audio) > self._audio_at_final

    async def _finalize(self, closing: bool = False) -> None:
        """Deepgram answers a Finalize "typically when there is a noticeable amount of audio
        buffered", and may not answer at all: so only buffered speech is flushed here, and
        `answer_finalize=False` never answers (CloseStream still flushes)."""
        if not closing and not self.fake.answer_finalize:
            return
        if self._ears is not None:
            await self._ears.flush(from_finalize=not closing)
        elif not closing and self.untranscribed:
            text, self.finalize_transcript = self.finalize_transcript, ""
            end = self.audio_seconds
            duration = min(end, max(0.3 * len(text.split()), 0.02))
            await self.send_results(text, is_final=True, speech_final=False, start=end - duration,
                                    duration=duration, from_finalize=True)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _end(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self.fake._session_closed()


class _Ears:
    """Script mode: an energy detector that turns voiced audio into the script's next line."""

    def __init__(self, session: ListenSession) -> None:
        self.session = session
        self.window = int(session.sample_rate * 0.02) * session.bytes_per_sample
        self.mulaw = session.param("encoding") == "mulaw"
        self.endpointing = _ms(session.param("endpointing"), default=10) / 1000.0
        self.utterance_end = _ms(session.param("utterance_end_ms"), default=0) / 1000.0
        self.interim = session.param("interim_results") == "true"
        self.vad_events = session.param("vad_events") == "true"
        self._rest = b""
        self.t = 0.0                      # stream time of the next window
        self.in_speech = False
        self.start = 0.0
        self.last_voice = 0.0
        self.last_interim = 0.0
        self.pending_end: float | None = None  # last word end awaiting an UtteranceEnd

    async def hear(self, data: bytes) -> None:
        data = self._rest + data
        cut = len(data) - len(data) % self.window
        self._rest = data[cut:]
        for i in range(0, cut, self.window):
            pcm = data[i:i + self.window]
            if self.mulaw:
                pcm = audioop.ulaw2lin(pcm, 2)
            await self._window(audioop.rms(pcm, 2) >= self.session.fake.vad_threshold_rms)
            self.t += 0.02

    async def _window(self, voiced: bool) -> None:
        s = self.session
        if voiced:
            if not self.in_speech:
                self.in_speech, self.start, self.last_interim = True, self.t, self.t
                self.pending_end = None
                if self.vad_events:
                    await s.send_speech_started(round(self.t, 3))
            self.last_voice = self.t + 0.02
            if self.interim and self.t - self.last_interim >= 0.5:
                self.last_interim = self.t
                await self._results(is_final=False, speech_final=False)
            return
        if self.in_speech and self.t + 0.02 - self.last_voice >= self.endpointing:
            await self._results(is_final=True, speech_final=True)
        elif (self.pending_end is not None and self.utterance_end
              and self.t - self.pending_end >= self.utterance_end):
            await s.send_utterance_end(round(self.pending_end, 3))
            self.pending_end = None

    async def flush(self, from_finalize: bool) -> None:
        """In speech, the words so far become final; between utterances there is nothing buffered,
        so nothing is sent."""
        if self.in_speech:
            await self._results(is_final=True, speech_final=False, from_finalize=from_finalize)

    async def _results(self, is_final: bool, speech_final: bool, from_finalize: bool = False) -> None:
        fake = self.session.fake
        line = fake.script[0] if fake.script else ""
        if self.session.param("filler_words") != "true":
            line = without_fillers(line)   # as Deepgram does unless filler_words=true
        end = self.last_voice if is_final else self.t + 0.02
        if is_final:
            if fake.script:
                fake.script.popleft()
                fake.heard.append(line)
                await fake._notify()
            self.in_speech = False
            self.pending_end = end
        else:  # an interim result carries the words "heard" so far
            words = line.split()
            share = min(1.0, (self.t - self.start) / max(0.3 * len(words), 0.3))
            line = " ".join(words[:max(1, math.floor(len(words) * share))])
        await self.session.send_results(line, is_final=is_final, speech_final=speech_final,
                                        start=round(self.start, 3), duration=round(end - self.start, 3),
                                        from_finalize=from_finalize)


class FakeDeepgram(FakeServer):
    """The fake Deepgram server; point DEEPGRAM_BASE_URL at `url` (the SDK derives ws:// and http://
    from it)."""

    def __init__(self, *, api_key: str | None = None, script: Sequence[str] | None = None,
                 idle_timeout_s: float = 10.0, vad_threshold_rms: int = 500,
                 answer_finalize: bool = True, full_confidence_s: float = 0.6) -> None:
        super().__init__()
        self.full_confidence_s = full_confidence_s   # Flux: silence at which the turn surely ended
        self.answer_finalize = answer_finalize  # False: a Finalize is never answered
        self.api_key = api_key               # when set, other keys get 401 as from Deepgram
        self.script = deque(script) if script is not None else None
        self.heard: list[str] = []           # script lines answered as final results
        self.idle_timeout_s = idle_timeout_s
        self.vad_threshold_rms = vad_threshold_rms
        self.sessions: list[ListenSession] = []
        self.attempts = 0                    # upgrade requests, refused ones included
        self.refused = 0
        self._refuse_status = 0
        self._refuse_left: int | None = None
        # True: a listen upgrade (v1 or v2) is counted, then never answered, and the connection is
        # not closed from this side even when the client half-closes it (see `_hang`); it lasts
        # until the client drops it or the fake stops. `hung_upgrades` counts them, `hung_waiting`
        # those still connected.
        self.listen_upgrade_hangs = False
        self.hung_upgrades = 0
        self.hung_waiting = 0
        self.speak_requests: list[RecordedRequest] = []
        self.recorded_script: deque[str] = deque()    # pre-recorded /v1/listen: one line per file
        self.transcribe_requests: list[RecordedRequest] = []
        self.speak_streams: list[StreamRecord] = []
        self.speak_chunk_sizes: Sequence[int] = (1601, 3, 799, 2401)
        self.speak_seconds_per_char = 0.06
        self.speak_bytes_per_s: float | None = None   # pace the audio (None: as fast as possible)
        self.speak_first_byte_delay_s = 0.0           # before the headers and first audio
        self.speak_hold_after: int | None = None      # stall after this many chunks until release
        self.speak_error: tuple[int, str] | None = None
        self.release = asyncio.Event()
        # The speak WebSocket (tests/fakes/deepgram_speak.py): its sessions, what they received, knobs.
        self.speak_sessions: list[ListenSession] = []
        self.speak_ws_speaks = 0                       # Speak messages, all sessions
        self.speak_ws_flushes = 0                      # Flush messages (refused ones too)
        self.speak_ws_clears = 0
        self.speak_ws_first_audio_delay_s = 0.0        # after a Flush, before its first audio
        self.speak_ws_bytes_per_s: float | None = None # pace each flush's audio (None: at once)
        self.speak_ws_hold_after: int | None = None    # each flush stalls after this many chunks until release
        self.speak_ws_idle_timeout_s: float | None = None   # close 1011 after this long with no text
        self.speak_ws_answer_clear = True              # False: a Clear is carried out but never answered
        self.speak_ws_flush_limit = 20                 # Flushes processed per window per connection
        self.speak_ws_flush_window_s = 60.0
        self._changed = asyncio.Condition()

    def refuse(self, status: int = 503, count: int | None = None) -> None:
        """Reject the next `count` upgrade attempts (all, when None) with an HTTP `status`."""
        self._refuse_status, self._refuse_left = status, count

    def accept(self) -> None:
        self._refuse_status, self._refuse_left = 0, None

    async def wait_session(self, index: int, timeout: float = 5.0) -> ListenSession:
        """The `index`-th (0-based) connection, once it is open."""
        await self._wait(lambda: len(self.sessions) > index, timeout)
        return self.sessions[index]

    async def wait_speak_session(self, index: int, timeout: float = 5.0) -> ListenSession:
        """The `index`-th (0-based) speak WebSocket, once it is open."""
        await self._wait(lambda: len(self.speak_sessions) > index, timeout)
        return self.speak_sessions[index]

    async def wait_speak_ws(self, predicate, timeout: float = 5.0) -> None:
        """Until `predicate()` holds; re-checked whenever a speak socket receives or closes."""
        await self._wait(predicate, timeout)

    async def wait_heard(self, count: int, timeout: float = 10.0) -> None:
        """Until `count` script lines have been answered as final results."""
        await self._wait(lambda: len(self.heard) >= count, timeout)

    async def wait_attempts(self, count: int, timeout: float = 5.0) -> None:
        await self._wait(lambda: self.attempts >= count, timeout)

    async def wait_speak_streams(self, count: int, timeout: float = 5.0) -> None:
        await self._wait(lambda: len(self.speak_streams) >= count, timeout)

    async def _wait(self, predicate, timeout: float) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _session_closed(self) -> None:
        asyncio.ensure_future(self._notify())

    # --- routing ------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [web.route("*", "/v1/listen", self._listen_or_transcribe), web.get("/v2/listen", self._listen),
                web.route("*", "/v1/speak", self._speak_or_stream),
                web.route("*", "/{tail:.*}", self._unknown)]

    async def _unknown(self, request: web.Request) -> web.Response:
        return json_response(404, _error("NOT_FOUND", f"no route for {request.method} {request.path}"))

    async def _listen_or_transcribe(self, request: web.Request) -> web.StreamResponse:
        """/v1/listen: a WebSocket upgrade (any method, as the fake always took it) is a live stream;
        a POST is a pre-recorded file."""
        if request.headers.get("upgrade", "").lower() == "websocket":
            return await self._listen(request)
        if request.method == "POST":
            return await self._transcribe(request)
        return await self._unknown(request)

    async def _speak_or_stream(self, request: web.Request) -> web.StreamResponse:
        """/v1/speak: a WebSocket upgrade is the streaming voice; a POST is one REST request."""
        if request.headers.get("upgrade", "").lower() == "websocket":
            return await self._listen(request)
        if request.method == "POST":
            return await self._speak(request)
        return await self._unknown(request)

    async def _listen(self, request: web.Request) -> web.StreamResponse:
        recorded = await RecordedRequest.of(request)
        self.attempts += 1
        await self._notify()
        if self.listen_upgrade_hangs and request.path in ("/v1/listen", "/v2/listen"):
            await self._hang(request)
        problem = self._check_listen(recorded)
        if problem is not None:  # refused at the upgrade, with an HTTP status, as Deepgram does
            self.refused += 1
            status, body = problem
            return json_response(status, body)
        ws = web.WebSocketResponse(max_msg_size=0, compress=False)
        await ws.prepare(request)
        if request.path == "/v1/speak":
            from tests.fakes.deepgram_speak import SpeakSession
            speaking = SpeakSession(self, recorded, ws, request.transport)
            self.speak_sessions.append(speaking)
            await self._notify()
            await speaking.run()
            return ws
        if request.path == "/v2/listen":
            from tests.fakes.deepgram_flux import FluxSession
            session: ListenSession = FluxSession(self, recorded, ws, request.transport)
        else:
            session = ListenSession(self, recorded, ws, request.transport)
        self.sessions.append(session)
        await self._notify()
        await session.run()
        return ws

    async def _hang(self, request: web.Request) -> None:
        """Never answer, and never close. aiohttp would close the connection at the client's EOF,
        and a client that half-closes while giving up (legacy websockets does) would then be let
        go at once; a stalled server does not answer the EOF, so the connection is taken from
        aiohttp (`_Stalled`) until it is dropped, which aiohttp is then told about (cancelling
        this handler)."""
        transport = request.transport
        if transport is not None:
            transport.set_protocol(_Stalled(transport.get_protocol()))
        self.hung_upgrades += 1
        self.hung_waiting += 1
        await self._notify()
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            self.hung_waiting -= 1
            self._session_closed()

    def _check_listen(self, request: RecordedRequest) -> tuple[int, dict] | None:
        if self._refuse_status and (self._refuse_left is None or self._refuse_left > 0):
            if self._refuse_left is not None:
                self._refuse_left -= 1
            return self._refuse_status, _error("SERVICE_UNAVAILABLE", "fake Deepgram refused the connection")
        if self.api_key is not None and request.headers.get("authorization") != f"Token {self.api_key}":
            return 401, _error("INVALID_AUTH", "Invalid credentials.")
        q = request.query
        if request.path == "/v2/listen":
            from tests.fakes.deepgram_flux import refusal
            body = refusal(q)
            return None if body is None else (400, body)
        if request.path == "/v1/speak":
            from tests.fakes.deepgram_speak import refusal as speak_refusal
            body = speak_refusal(q)
            return None if body is None else (400, body)
        encoding = (q.get("encoding") or [None])[0]
        if encoding is not None and encoding not in ENCODINGS:
            return 400, _error("INVALID_QUERY_PARAMETER", f"unknown encoding {encoding!r}")
        if encoding is not None and "sample_rate" not in q:
            return 400, _error("INVALID_QUERY_PARAMETER", "raw audio needs sample_rate")
        if "keyterm" in q and not (q.get("model") or [""])[0].startswith("nova-3"):
            return 400, _error("INVALID_QUERY_PARAMETER", "keyterm is only supported by Nova-3 models")
        return None

    # --- pre-recorded transcription ----------------------------------------------------------
    async def _transcribe(self, request: web.Request) -> web.Response:
        """POST /v1/listen with the audio file as the body: the next line of `recorded_script`."""
        recorded = await RecordedRequest.of(request)
        self.transcribe_requests.append(recorded)
        await self._notify()
        if self.api_key is not None and recorded.headers.get("authorization") != f"Token {self.api_key}":
            return json_response(401, _error("INVALID_AUTH", "Invalid credentials."))
        if not recorded.body:
            return json_response(400, _error("Bad Request", "Bad Request: failed to process audio: "
                                             "corrupt or unsupported data"))
        text = self.recorded_script.popleft() if self.recorded_script else ""
        duration = max(len(recorded.body) - 44, 0) / 16000
        return json_response(200, {
            "metadata": {"transaction_key": "deprecated", "request_id": str(uuid.uuid4()),
                         "sha256": hashlib.sha256(recorded.body).hexdigest(),
                         "created": datetime.now(UTC).isoformat(), "duration": duration,
                         "channels": 1, "models": [MODEL_UUID], "model_info": {MODEL_UUID: MODEL_INFO}},
            "results": {"channels": [{"alternatives": [
                results_message(text, is_final=True, speech_final=True, start=0.0,
                                duration=duration)["channel"]["alternatives"][0]]}]},
        })

    # --- Aura ---------------------------------------------------------------------------
    async def _speak(self, request: web.Request) -> web.StreamResponse:
        recorded = await RecordedRequest.of(request)
        self.speak_requests.append(recorded)
        await self._notify()
        if self.api_key is not None and recorded.headers.get("authorization") != f"Token {self.api_key}":
            return json_response(401, _error("INVALID_AUTH", "Invalid credentials."))
        if self.speak_error is not None:
            status, message = self.speak_error
            return json_response(status, _error("FAKE_ERROR", message))
        q = {k: v[0] for k, v in recorded.query.items()}
        try:
            text = str(recorded.json()["text"])
        except (ValueError, KeyError, TypeError):
            text = ""
        if not text.strip():
            return json_response(400, _error("INVALID_INPUT", "text must not be empty"))
        encoding = q.get("encoding", "mp3")
        rate = int(q.get("sample_rate", "8000" if encoding == "mulaw" else "24000"))
        if encoding == "mulaw" and rate not in (8000, 16000):
            return json_response(400, _error("INVALID_QUERY_PARAMETER", "mulaw needs sample_rate 8000 or 16000"))
        if encoding not in ("mulaw", "linear16", "alaw"):
            return json_response(400, _error("UNSUPPORTED_BY_FAKE", f"the fake cannot make {encoding}"))
        audio = speak_audio(text, encoding, rate, self.speak_seconds_per_char)
        if q.get("container", "wav") == "wav":  # Deepgram's default container for raw encodings
            audio = _wav_header(len(audio), encoding, rate) + audio
        record = StreamRecord(recorded)
        self.speak_streams.append(record)
        await self._notify()
        if self.speak_first_byte_delay_s:
            await asyncio.sleep(self.speak_first_byte_delay_s)   # the synthesis before the first audio
        response = web.StreamResponse(headers={
            "content-type": f"audio/{encoding}", "dg-model-name": q.get("model", "aura-2-thalia-en"),
            "dg-model-uuid": MODEL_UUID, "dg-char-count": str(len(text)), "dg-request-id": str(uuid.uuid4())})
        try:
            with self.streaming(record):
                await response.prepare(request)
                await stream_chunks(response, record, audio, self.speak_chunk_sizes, self.speak_bytes_per_s,
                                    self.speak_hold_after, self.release)
        finally:
            await self._notify()
        return response


class _Stalled(asyncio.Protocol):
    """A connection nobody serves: data and EOF are ignored (the socket stays open), and only its
    loss is passed on to the protocol that had it."""

    def __init__(self, previous: asyncio.BaseProtocol) -> None:
        self._previous = previous

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return True   # keep our side open, as a stalled peer does

    def connection_lost(self, exc: Exception | None) -> None:
        self._previous.connection_lost(exc)


# --- shapes and helpers (shared with tests) ----------------------------------------------------
def without_fillers(text: str) -> str:
    """What Deepgram makes of speech with "uh" and "um" in it when `filler_words` is not true: the
    two are left out ("the two most common fillers ... are stripped out of the transcript",
    https://developers.deepgram.com/docs/filler-words); the other fillers stay."""
    return " ".join(w for w in text.split() if w.strip(".,?!").lower() not in ("uh", "um"))


def results_message(transcript: str, *, is_final: bool, speech_final: bool, start: float,
                    duration: float, confidence: float = 0.98, from_finalize: bool = False,
                    request_id: str = "") -> dict[str, Any]:
    """A Results message exactly as Deepgram's live API sends it."""
    words = transcript.split()
    step = duration / len(words) if words else 0.0
    return {
        "type": "Results", "channel_index": [0, 1], "duration": duration, "start": start,
        "is_final": is_final, "speech_final": speech_final, "from_finalize": from_finalize,
        "channel": {"alternatives": [{
            "transcript": transcript, "confidence": confidence,
            "words": [{"word": w.strip(".,?!").lower(), "start": round(start + i * step, 3),
                       "end": round(start + (i + 1) * step, 3), "confidence": confidence,
                       "punctuated_word": w} for i, w in enumerate(words)],
        }]},
        "metadata": {"request_id": request_id or str(uuid.uuid4()), "model_info": MODEL_INFO,
                     "model_uuid": MODEL_UUID},
    }


def speak_audio(text: str, encoding: str, rate: int, seconds_per_char: float) -> bytes:
    """A tone as long as the text would take to say, in the requested encoding."""
    n = max(int(len(text) * seconds_per_char * rate), rate // 10)
    pcm = tone(n, rate)
    if encoding == "mulaw":
        return audioop.lin2ulaw(pcm, 2)
    if encoding == "alaw":
        return audioop.lin2alaw(pcm, 2)
    return pcm


def tone(samples: int, rate: int, hz: float = 330.0, amplitude: int = 6000) -> bytes:
    """PCM16 little-endian mono sine."""
    t = np.arange(samples) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def _ms(value: str | None, default: int) -> int:
    if value in (None, "", "false"):
        return default
    return int(float(value))


def _error(code: str, message: str) -> dict[str, str]:
    return {"err_code": code, "err_msg": message, "request_id": str(uuid.uuid4())}


def _wav_header(size: int, encoding: str, rate: int) -> bytes:
    fmt, width = {"mulaw": (7, 1), "alaw": (6, 1)}.get(encoding, (1, 2))
    return (b"RIFF" + (36 + size).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
            + fmt.to_bytes(2, "little") + (1).to_bytes(2, "little") + rate.to_bytes(4, "little")
            + (rate * width).to_bytes(4, "little") + width.to_bytes(2, "little")
            + (width * 8).to_bytes(2, "little") + b"data" + size.to_bytes(4, "little"))
