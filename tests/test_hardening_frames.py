"""Malformed Media Streams frames in the middle of a live call, through the real server: each is
dropped (and counted), and the caller's next line is still answered."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator

import pytest
import websockets
from twilio.request_validator import RequestValidator

from services.orchestrator.record import TurnRecord
from services.simulator.voice import speech_ulaw
from services.telephony import media_streams as wire
from services.telephony.webhook import StreamClaim, stream_parameters
from tests.conftest import Running, running_zylin
from tests.factories import AUTH_TOKEN

CALL_SID, STREAM_SID, ACCOUNT_SID = "CA" + "7" * 32, "MZ" + "7" * 32, "AC" + "7" * 32
SILENCE = b"\xff" * 160
PAYLOAD = base64.b64encode(SILENCE).decode()
LINES = [("What are your opening hours?", "open Monday"), ("How much is a cleaning?", "$120")]


def _media(chunk: str, timestamp: str) -> str:
    """A media frame of silence with its numbers written verbatim, as a broken peer might."""
    # %-formatting: the template is JSON, whose braces str.format would need doubled
    return ('{"event":"media","streamSid":"%s","media":{"track":"inbound","chunk":%s,'  # noqa: UP031
            '"timestamp":%s,"payload":"%s"}}' % (STREAM_SID, chunk, timestamp, PAYLOAD))


def _second_start(tracks: object) -> str:
    start = json.loads(wire.inbound_start(9, STREAM_SID, CALL_SID, ACCOUNT_SID, {}))
    start["start"]["tracks"] = tracks
    return json.dumps(start)


BAD_FRAMES = {
    "chunk-infinity": (_media("Infinity", '"0"'), "malformed"),
    "timestamp-1e400": (_media('"1"', "1e400"), "malformed"),
    "chunk-nan": (_media("NaN", '"0"'), "malformed"),
    "chunk-5000-digits": (_media("1" * 5000, '"0"'), "malformed"),
    "second-start-tracks-5": (_second_start(5), "malformed"),
    "stop-of-another-stream": (wire.inbound_stop(9, "MZ" + "0" * 32, "CA" + "0" * 32, ACCOUNT_SID),
                               "wrong stream"),
}


class RawCall:
    """One Media Stream driven frame by frame as Twilio would, marks echoed on arrival, with
    the server's recorder telling when each turn is done."""

    def __init__(self, zylin: Running, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.seq = 0
        self.chunk = 0
        self.turns: asyncio.Queue[TurnRecord] = asyncio.Queue()
        recorded = zylin.recorder.turn

        def turn(call, record: TurnRecord) -> None:
            recorded(call, record)
            if call.call_sid == CALL_SID:
                self.turns.put_nowait(record)

        zylin.recorder.turn = turn

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    async def echo_marks(self) -> None:
        async for text in self.ws:
            out = wire.parse_outbound(text)
            if out.event == "mark":
                await self.ws.send(wire.inbound_mark(self.next_seq(), STREAM_SID, out.name))

    async def audio(self, ulaw: bytes) -> None:
        for n in range(0, len(ulaw), 160):
            self.chunk += 1
            frame = ulaw[n:n + 160].ljust(160, b"\xff")
            await self.ws.send(wire.inbound_media(self.next_seq(), STREAM_SID, self.chunk,
                                                  (self.chunk - 1) * 20, frame))

    async def next_turn(self, speaker: str) -> TurnRecord:
        while True:
            turn = await asyncio.wait_for(self.turns.get(), 10)
            if turn.speaker == speaker:
                return turn

    async def say(self, line: str) -> tuple[TurnRecord, TurnRecord]:
        """Speak a line and wait for it to be heard and the reply to finish playing."""
        await self.audio(speech_ulaw(line) + SILENCE * 30)
        return await self.next_turn("caller"), await self.next_turn("zylin")


@contextlib.asynccontextmanager
async def raw_call(zylin: Running, lines: list[str]) -> AsyncIterator[RawCall]:
    """A signed stream with `lines` as the mock recognizer's script, stopped on exit."""
    signature = RequestValidator(AUTH_TOKEN).compute_signature(zylin.settings.media_stream_url, {})
    params = {**stream_parameters(StreamClaim(CALL_SID, "+15550007777", ""), zylin.settings.token_secret),
              "mockScript": json.dumps(lines)}
    async with websockets.connect(zylin.ws_url, additional_headers={"X-Twilio-Signature": signature}) as ws:
        call = RawCall(zylin, ws)
        await ws.send(wire.inbound_connected())
        await ws.send(wire.inbound_start(call.next_seq(), STREAM_SID, CALL_SID, ACCOUNT_SID, params))
        echo = asyncio.create_task(call.echo_marks())
        try:
            yield call
            await ws.send(wire.inbound_stop(call.next_seq(), STREAM_SID, CALL_SID, ACCOUNT_SID))
        finally:
            echo.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await echo


@pytest.mark.parametrize("name", list(BAD_FRAMES))
async def test_a_malformed_frame_mid_call_is_dropped_and_the_next_line_is_answered(name, caplog):
    frame, kind = BAD_FRAMES[name]
    caplog.set_level(logging.WARNING, logger="zylin.api.media")
    async with running_zylin() as zylin:
        async with raw_call(zylin, [line for line, _ in LINES]) as call:
            greeting = await call.next_turn("zylin")
            first, _ = await call.say(LINES[0][0])
            await call.ws.send(frame)
            heard, answer = await call.say(LINES[1][0])
        record = await zylin.recorder.wait_ended(CALL_SID)

    assert greeting.text.startswith("Thanks for calling")
    assert (first.text, heard.text) == (LINES[0][0], LINES[1][0])
    assert LINES[1][1] in answer.text, "the line after the bad frame is answered"
    assert record["ended"] == "stop event"
    totals = [r.getMessage() for r in caplog.records if "dropped frames" in r.getMessage()]
    assert totals == [f"media stream dropped frames: {{'{kind}': 1}}"]


async def test_every_malformed_frame_in_one_call_is_counted_and_each_next_line_answered(caplog):
    caplog.set_level(logging.WARNING, logger="zylin.api.media")
    lines = [("What are your opening hours?", "open Monday"), ("How much is a cleaning?", "$120"),
             ("Do you have parking?", "free parking")] * 2
    async with running_zylin() as zylin:
        async with raw_call(zylin, [line for line, _ in lines]) as call:
            await call.next_turn("zylin")
            answers = []
            for (frame, _), (line, _) in zip(BAD_FRAMES.values(), lines, strict=True):
                await call.ws.send(frame)
                answers.append(await call.say(line))
        record = await zylin.recorder.wait_ended(CALL_SID)

    assert [heard.text for heard, _ in answers] == [line for line, _ in lines]
    for (_, answer), (_, expected) in zip(answers, lines, strict=True):
        assert expected in answer.text
    assert record["ended"] == "stop event"
    kinds = [kind for _, kind in BAD_FRAMES.values()]
    totals = {kind: kinds.count(kind) for kind in dict.fromkeys(kinds)}
    assert f"media stream dropped frames: {totals}" in caplog.text


def test_the_broken_frames_differ_from_good_ones_only_in_the_broken_field():
    """So the tests above exercise the number and track readers, not some earlier check."""
    assert wire.parse_event(_media('"1"', '"0"')).payload == SILENCE
    assert wire.parse_event(_second_start(["inbound"])).tracks == ("inbound",)
