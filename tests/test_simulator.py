"""The simulated Twilio caller, checked against a tiny fake Zylin server on loopback.

The fake answers the webhook with <Connect><Stream>, verifies Twilio signatures, greets, and
replies with 1 s of audio plus a mark whenever it hears 300 ms of speech then 300 ms of silence.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import wave
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from services.audio.codec import FRAME_BYTES, pcm_to_ulaw, rms, ulaw_to_pcm
from services.simulator.caller import CallerLine, CallResult, SimulatedCaller, parse_stream_twiml
from services.simulator.server import serve_app
from services.simulator.voice import speech_seconds, speech_ulaw
from services.telephony import media_streams as wire

TOKEN = "test-auth-token"
PUBLIC_URL = "https://zylin.example.test"
STREAM_URL = "wss://example.test/media-stream"
SPEED = 4.0
FRAME_S = 0.02


def tone_ulaw(seconds: float, freq: float = 440.0, amp: int = 8000) -> bytes:
    n = int(seconds * 8000)
    pcm = b"".join(int(amp * math.sin(2 * math.pi * freq * i / 8000)).to_bytes(2, "little", signed=True)
                   for i in range(n))
    return pcm_to_ulaw(pcm)


@dataclass
class FakeZylin:
    """Just enough of Zylin to talk to: what it saw is kept for the assertions."""

    greeting_s: float = 0.5
    reply_s: float = 1.0
    barge_in_clears: bool = False        # speech while a mark is unechoed -> send `clear`
    close_after_replies: int | None = None   # end the call (close 1000) after N replies played
    close_on_start: int | None = None        # refuse the stream after `start` with this code
    replies_to_speech: bool = True

    webhook_valid: list[bool] = field(default_factory=list)
    upgrade_valid: list[bool] = field(default_factory=list)
    events: list[tuple[float, wire.InboundEvent]] = field(default_factory=list)
    sent_audio: list[tuple[float, float, str]] = field(default_factory=list)  # (first, last sent, mark)
    clears_sent: list[float] = field(default_factory=list)
    got_stop: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/api/twilio/voice", self.voice, methods=["POST"]),
                                 WebSocketRoute("/media-stream", self.media_stream)])

    async def voice(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        valid = RequestValidator(TOKEN).validate(PUBLIC_URL + "/api/twilio/voice", form,
                                                 request.headers.get("X-Twilio-Signature", ""))
        self.webhook_valid.append(valid)
        if not valid:
            return Response("bad signature", status_code=403)
        response = VoiceResponse()
        connect = Connect()
        stream = connect.stream(url=STREAM_URL)
        stream.parameter(name="callSid", value=form["CallSid"])
        stream.parameter(name="from", value=form["From"])
        response.append(connect)
        return Response(str(response), media_type="application/xml")

    def marks(self, name: str) -> list[float]:
        return [t for t, e in self.events if isinstance(e, wire.Mark) and e.name == name]

    def of_type(self, kind: type) -> list:
        return [e for _, e in self.events if isinstance(e, kind)]

    async def media_stream(self, ws: WebSocket) -> None:
        valid = RequestValidator(TOKEN).validate(STREAM_URL, {}, ws.headers.get("X-Twilio-Signature", ""))
        self.upgrade_valid.append(valid)
        await ws.accept()
        if not valid:
            await ws.close(code=1008)
            return
        stream_sid = ""
        outstanding: set[str] = set()
        loud = quiet = replies = 0
        cleared_this_speech = False

        async def play(ulaw: bytes, mark: str) -> None:
            first = time.monotonic()
            for i in range(0, len(ulaw), FRAME_BYTES):
                await ws.send_text(wire.media_message(stream_sid, ulaw[i:i + FRAME_BYTES]))
            self.sent_audio.append((first, time.monotonic(), mark))
            outstanding.add(mark)
            await ws.send_text(wire.mark_message(stream_sid, mark))

        try:
            while True:
                event = wire.parse_event(await ws.receive_text())
                self.events.append((time.monotonic(), event))
                if isinstance(event, wire.Start):
                    stream_sid = event.stream_sid
                    if self.close_on_start is not None:
                        await ws.close(code=self.close_on_start)
                        return
                    await play(tone_ulaw(self.greeting_s, 330.0), "greeting")
                elif isinstance(event, wire.Mark):
                    outstanding.discard(event.name)
                    if self.close_after_replies is not None and replies >= self.close_after_replies \
                            and not outstanding:
                        await ws.close(code=1000)
                        return
                elif isinstance(event, wire.Dtmf):
                    replies += 1
                    await play(tone_ulaw(0.4), f"dtmf-{event.digit}")
                elif isinstance(event, wire.Stop):
                    self.got_stop.set()
                    await ws.close()
                    return
                elif isinstance(event, wire.Media):
                    if rms(ulaw_to_pcm(event.payload)) > 500:
                        loud, quiet = loud + 1, 0
                        if self.barge_in_clears and loud >= 3 and outstanding and not cleared_this_speech:
                            cleared_this_speech = True
                            self.clears_sent.append(time.monotonic())
                            await ws.send_text(wire.clear_message(stream_sid))
                    elif loud:
                        quiet += 1
                    if loud >= 15 and quiet >= 15 and self.replies_to_speech:  # 300 ms speech, 300 ms silence
                        loud = quiet = 0
                        cleared_this_speech = False
                        replies += 1
                        await play(tone_ulaw(self.reply_s), f"reply-{replies}")
                    elif quiet >= 15:
                        loud = quiet = 0
        except WebSocketDisconnect:
            pass


async def place_call(fake: FakeZylin, lines: list[CallerLine], *, sign: bool = True,
                     hang_up: bool = True, timeout_s: float = 30.0, **caller_kw) -> CallResult:
    async with serve_app(fake.app()) as base_url:
        caller = SimulatedCaller(base_url, PUBLIC_URL, TOKEN, speed=SPEED,
                                 reply_timeout_s=caller_kw.pop("reply_timeout_s", 8.0), **caller_kw)
        return await asyncio.wait_for(caller.call(lines, sign=sign, hang_up=hang_up), timeout_s)


def voiced_frames(ulaw: bytes) -> int:
    return sum(rms(ulaw_to_pcm(ulaw[i:i + FRAME_BYTES])) > 500 for i in range(0, len(ulaw), FRAME_BYTES))


# --- the caller's voice -------------------------------------------------------------------------

def test_caller_voice_is_loud_natural_length_and_one_utterance() -> None:
    text = "Hi, I would like to book a haircut for tomorrow morning please"
    ulaw = speech_ulaw(text, seed=1)
    assert ulaw == speech_ulaw(text, seed=1)
    assert len(ulaw) % FRAME_BYTES == 0
    assert abs(len(ulaw) / 8000 - 0.07 * len(text)) < 0.03
    assert len(speech_ulaw("ok", seed=1)) == 0.6 * 8000 == speech_seconds("ok") * 8000
    levels = [rms(ulaw_to_pcm(ulaw[i:i + FRAME_BYTES])) for i in range(0, len(ulaw), FRAME_BYTES)]
    assert levels[0] > 1500 and levels[-1] > 1500
    assert sum(lv > 1500 for lv in levels) > 0.75 * len(levels), "mostly clearly voiced"
    run = longest = 0
    for lv in levels:
        run = run + 1 if lv <= 500 else 0
        longest = max(longest, run)
    assert longest * 20 <= 120, "a gap between words must not end the utterance"


def test_stream_twiml_is_parsed() -> None:
    response = VoiceResponse()
    connect = Connect()
    connect.stream(url=STREAM_URL).parameter(name="token", value="abc")
    response.append(connect)
    assert parse_stream_twiml(str(response)) == (STREAM_URL, {"token": "abc"})
    assert parse_stream_twiml("<Response><Say>closed</Say></Response>") == ("", {})


# --- calls through the fake server ----------------------------------------------------------------

async def test_caller_signs_webhook_and_upgrade_and_streams_like_twilio() -> None:
    fake = FakeZylin()
    result = await place_call(fake, [CallerLine("hello there, what are your hours"),
                                     CallerLine("thanks, bye")])

    assert fake.webhook_valid == [True] and fake.upgrade_valid == [True]
    assert result.webhook_status == 200 and result.stream_url == STREAM_URL
    assert result.parameters == {"callSid": result.call_sid, "from": "+15551230001"}
    assert "<Connect><Stream" in result.twiml
    assert result.protocol_errors == [] and result.timeouts == []

    kinds = [type(e).__name__ for _, e in fake.events]
    assert kinds[:2] == ["Connected", "Start"] and kinds[-1] == "Stop"
    start = fake.of_type(wire.Start)[0]
    assert start.stream_sid == result.stream_sid and start.stream_sid.startswith("MZ")
    assert start.call_sid == result.call_sid and start.call_sid.startswith("CA")
    assert start.custom_parameters["callSid"] == result.call_sid
    assert json.loads(start.custom_parameters["mockScript"]) == ["hello there, what are your hours",
                                                                "thanks, bye"]
    media = fake.of_type(wire.Media)
    assert [m.chunk for m in media] == list(range(1, len(media) + 1))
    assert [m.timestamp_ms for m in media] == [20 * i for i in range(len(media))]
    assert all(len(m.payload) == FRAME_BYTES for m in media)
    assert fake.got_stop.is_set() and not result.closed_by_server
    assert [name for _, name in result.marks_echoed] == ["greeting", "reply-1", "reply-2"]
    # each line waited for the bot to finish: it starts after the previous reply's mark echo
    echo_t = dict((name, t) for t, name in result.marks_echoed)
    assert result.lines[0].start > echo_t["greeting"]
    assert result.lines[1].start > echo_t["reply-1"]
    assert all(lat is not None and lat >= 0 for lat in result.reply_latencies_ms())


async def test_unsigned_webhook_is_refused_and_no_stream_opens() -> None:
    fake = FakeZylin()
    result = await place_call(fake, [CallerLine("hello")], sign=False)
    assert result.webhook_status == 403
    assert fake.webhook_valid == [False] and fake.upgrade_valid == []
    assert result.stream_url == "" and not result.connected and result.received == []


async def test_marks_are_echoed_only_after_their_audio_has_played() -> None:
    fake = FakeZylin(greeting_s=0.5, reply_s=1.0)
    result = await place_call(fake, [CallerLine("I need an appointment please")])

    for first_sent, last_sent, mark in fake.sent_audio:
        duration = (fake.greeting_s if mark == "greeting" else fake.reply_s) / SPEED
        (echo_t,) = fake.marks(mark)
        assert last_sent - first_sent < duration / 2, "the fake sends faster than real time"
        assert echo_t - first_sent >= 0.9 * duration, f"{mark} echoed before its audio played"
        assert echo_t - first_sent < duration + 1.0
    # the caller's own record agrees with what the server saw
    assert [name for _, name in result.marks_echoed] == ["greeting", "reply-1"]
    assert len(result.media_payloads()) == round((fake.greeting_s + fake.reply_s) / FRAME_S)


async def test_barge_in_line_starts_while_the_bot_is_still_talking() -> None:
    fake = FakeZylin(greeting_s=3.0)
    result = await place_call(fake, [CallerLine("sorry, can I book for Friday", barge_in_after_ms=400)])

    (line,) = result.lines
    greeting_first_rx = result.first_media_after(result.started_at)
    greeting_would_end = greeting_first_rx + fake.greeting_s / SPEED
    assert line.start - greeting_first_rx >= 0.4 / SPEED * 0.9
    assert line.start < greeting_would_end, "the caller spoke over the greeting"
    assert result.timeouts == []


async def test_clear_drops_queued_audio_and_echoes_pending_marks_at_once() -> None:
    fake = FakeZylin(greeting_s=3.0, barge_in_clears=True)
    result = await place_call(fake, [CallerLine("wait, I have a question", barge_in_after_ms=300)])

    assert len(fake.clears_sent) == 1 and len(result.clears) == 1
    clear_t = result.clears[0]
    echo_t = dict((name, t) for t, name in result.marks_echoed)
    assert 0 <= echo_t["greeting"] - clear_t < 0.1, "a clear echoes pending marks immediately"
    # the call went on: the reply to the barge-in line played in full after the clear ...
    assert echo_t["reply-1"] > echo_t["greeting"]
    # ... but the greeting's queued audio was dropped: well under half of its 3 s was heard
    greeting_heard = voiced_frames(result.heard_ulaw) - round(fake.reply_s / FRAME_S)
    assert 0 < greeting_heard < 0.5 * fake.greeting_s / FRAME_S


async def test_heard_wav_is_a_timeline_of_the_whole_call(tmp_path) -> None:
    fake = FakeZylin(greeting_s=0.5, reply_s=1.0)
    result = await place_call(fake, [CallerLine("what time do you open", pause_before_ms=200)])

    assert len(result.heard_ulaw) % FRAME_BYTES == 0
    call_audio_s = (result.ended_at - result.started_at) * SPEED
    heard_s = len(result.heard_ulaw) / 8000
    assert abs(heard_s - call_audio_s) < 0.1 * call_audio_s + 0.2
    assert voiced_frames(result.heard_ulaw) == round((fake.greeting_s + fake.reply_s) / FRAME_S)
    sent_s = len(fake.of_type(wire.Media)) * FRAME_S  # Twilio streams the whole call, silence too
    assert abs(sent_s - call_audio_s) < 0.1 * call_audio_s + 0.2

    path = result.heard_wav(tmp_path / "call.wav")
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        assert wav.getnframes() == len(result.heard_ulaw)


async def test_dtmf_key_press_is_sent_as_a_dtmf_event() -> None:
    fake = FakeZylin()
    result = await place_call(fake, [CallerLine(dtmf="0", pause_before_ms=100)])

    (dtmf,) = fake.of_type(wire.Dtmf)
    assert dtmf.digit == "0" and dtmf.stream_sid == result.stream_sid
    assert [d for _, d in result.dtmf_sent] == ["0"] and result.lines == []
    assert [name for _, name in result.marks_echoed] == ["greeting", "dtmf-0"]
    assert result.timeouts == []
    start = fake.of_type(wire.Start)[0]
    assert json.loads(start.custom_parameters["mockScript"]) == []


async def test_server_ending_the_call_is_recorded() -> None:
    fake = FakeZylin(close_after_replies=1)
    result = await place_call(fake, [CallerLine("that's all, goodbye"), CallerLine("never said")],
                              hang_up=False)
    assert result.closed_by_server and result.close_code == 1000
    assert [line.text for line in result.lines] == ["that's all, goodbye"]
    assert not fake.got_stop.is_set()


async def test_stream_refused_by_server_records_close_code() -> None:
    fake = FakeZylin(close_on_start=1008)
    result = await place_call(fake, [CallerLine("hello")])
    assert result.closed_by_server and result.close_code == 1008
    assert result.lines == [] and result.timeouts == []


async def test_bad_upgrade_signature_is_closed_1008() -> None:
    fake = FakeZylin()
    async with serve_app(fake.app()) as base_url:
        caller = SimulatedCaller(base_url, PUBLIC_URL, TOKEN, speed=SPEED, reply_timeout_s=5.0)
        caller._signature = lambda url, params, sign: (  # webhook signed, upgrade not
            {"X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(url, params)}
            if url.startswith("https://") else {"X-Twilio-Signature": "bogus"})
        result = await asyncio.wait_for(caller.call([CallerLine("hello")]), 20)
    assert fake.upgrade_valid == [False]
    assert result.closed_by_server and result.close_code == 1008


async def test_a_bot_that_never_answers_is_a_recorded_timeout_and_the_call_still_ends() -> None:
    fake = FakeZylin(replies_to_speech=False)
    result = await place_call(fake, [CallerLine("hello?"), CallerLine("anyone there?")],
                              reply_timeout_s=0.5)
    assert [line.text for line in result.lines] == ["hello?", "anyone there?"]
    assert len(result.timeouts) == 2 and "line 2" in result.timeouts[0]
    assert result.reply_latencies_ms() == [None, None]
    assert fake.got_stop.is_set() and not result.closed_by_server
