"""The Twilio Media Streams wire format: what Twilio sends us, and what we may send back."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from services.telephony.media_streams import (
    Connected,
    Dtmf,
    Mark,
    Media,
    ProtocolError,
    Start,
    Stop,
    StreamSender,
    clear_message,
    inbound_connected,
    inbound_dtmf,
    inbound_mark,
    inbound_media,
    inbound_start,
    inbound_stop,
    mark_message,
    media_message,
    parse_event,
    parse_outbound,
)

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL = "CA44d4a0a8e1d49a5a9ea6b6e6a1f5c9f0"
ACCOUNT = "ACxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
ULAW = bytes(range(0x7F, 0xFF)) + bytes(32)  # 160 bytes, one 20 ms frame
PAYLOAD = base64.b64encode(ULAW).decode()

# Copied from Twilio's "WebSocket Messages" documentation (numbers arrive as strings).
TWILIO_CONNECTED = '{"event": "connected", "protocol": "Call", "version": "1.0.0"}'
TWILIO_START = json.dumps({
    "event": "start", "sequenceNumber": "1",
    "start": {
        "accountSid": ACCOUNT, "streamSid": SID, "callSid": CALL,
        "tracks": ["inbound"],
        "customParameters": {"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
    "streamSid": SID,
})
TWILIO_MEDIA = json.dumps({
    "event": "media", "sequenceNumber": "3",
    "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": PAYLOAD},
    "streamSid": SID,
})
TWILIO_DTMF = json.dumps({"event": "dtmf", "streamSid": SID, "sequenceNumber": "5",
                          "dtmf": {"track": "inbound_track", "digit": "1"}})
TWILIO_MARK = json.dumps({"event": "mark", "sequenceNumber": "4", "streamSid": SID,
                          "mark": {"name": "my label"}})
TWILIO_STOP = json.dumps({"event": "stop", "sequenceNumber": "5", "streamSid": SID,
                          "stop": {"accountSid": ACCOUNT, "callSid": CALL}})


# --- inbound: Twilio's documented examples ------------------------------------------------------

def test_connected_arrives_without_a_stream_sid() -> None:
    assert parse_event(TWILIO_CONNECTED) == Connected(protocol="Call", version="1.0.0")


def test_start_carries_the_call_the_media_format_and_our_parameters() -> None:
    start = parse_event(TWILIO_START)
    assert isinstance(start, Start)
    assert (start.stream_sid, start.call_sid, start.account_sid) == (SID, CALL, ACCOUNT)
    assert start.tracks == ("inbound",)
    assert (start.encoding, start.sample_rate, start.channels) == ("audio/x-mulaw", 8000, 1)
    assert start.custom_parameters == {"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"}


def test_media_numbers_sent_as_strings_become_ints_and_the_payload_becomes_mulaw_bytes() -> None:
    media = parse_event(TWILIO_MEDIA)
    assert media == Media(stream_sid=SID, track="inbound", chunk=1, timestamp_ms=5, payload=ULAW)


def test_dtmf_mark_and_stop_are_read_as_twilio_documents_them() -> None:
    assert parse_event(TWILIO_DTMF) == Dtmf(stream_sid=SID, digit="1")
    assert parse_event(TWILIO_MARK) == Mark(stream_sid=SID, name="my label")
    assert parse_event(TWILIO_STOP) == Stop(stream_sid=SID, call_sid=CALL)


# --- inbound: the simulator's builders produce the same thing ------------------------------------

def test_inbound_builders_round_trip_through_the_parser() -> None:
    params = {"call_token": "abc", "caller": "+15551234567"}
    assert isinstance(parse_event(inbound_connected()), Connected)
    start = parse_event(inbound_start(1, SID, CALL, ACCOUNT, params))
    assert isinstance(start, Start)
    assert (start.stream_sid, start.call_sid, start.custom_parameters) == (SID, CALL, params)
    assert start.sample_rate == 8000
    assert parse_event(inbound_media(2, SID, 7, 140, ULAW)) == Media(SID, "inbound", 7, 140, ULAW)
    assert parse_event(inbound_dtmf(3, SID, "#")) == Dtmf(SID, "#")
    assert parse_event(inbound_mark(4, SID, "r2:s1")) == Mark(SID, "r2:s1")
    assert parse_event(inbound_stop(5, SID, CALL, ACCOUNT)) == Stop(SID, CALL)


def test_builder_media_uses_strings_for_numbers_like_twilio() -> None:
    msg = json.loads(inbound_media(9, SID, 12, 220, ULAW))
    assert msg["sequenceNumber"] == "9"
    assert msg["media"]["chunk"] == "12"
    assert msg["media"]["timestamp"] == "220"


# --- inbound: malformed frames --------------------------------------------------------------------

def _media_with(**media_fields) -> str:
    media = {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": PAYLOAD}
    media.update(media_fields)
    return json.dumps({"event": "media", "streamSid": SID, "media": {k: v for k, v in media.items()
                                                                      if v is not None}})


@pytest.mark.parametrize(("frame", "complaint"), [
    ("{not json", "not valid JSON"),
    ('[{"event": "media"}]', "not a JSON object"),
    ('{"event": "dance", "streamSid": "MZ1"}', "unknown event 'dance'"),
    ('{"streamSid": "MZ1"}', "unknown event None"),
    (_media_with(payload=None), "payload"),
    (_media_with(payload="***not base64***"), "base64"),
    (_media_with(payload="ünïcödé"), "base64"),
    (_media_with(chunk="one"), "chunk"),
    (json.dumps({"event": "media", "streamSid": SID}), "media"),
    (json.dumps({"event": "start", "streamSid": SID, "start": {"streamSid": SID}}), "callSid"),
    (json.dumps({"event": "mark", "streamSid": SID, "mark": {}}), "name"),
    ("[" * 100_000 + "]" * 100_000, "JSON"),
    ('{"a":' * 100_000 + "1" + "}" * 100_000, "JSON"),
], ids=["invalid-json", "json-array", "unknown-event", "no-event", "media-no-payload",
        "bad-base64", "non-ascii-payload", "non-numeric-chunk", "media-no-media", "start-no-callsid", "mark-no-name",
        "deep-array", "deep-object"])
def test_a_malformed_frame_is_a_protocol_error_that_names_the_problem(frame: str, complaint: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_event(frame)
    assert complaint in str(caught.value)


def _raw_media(chunk: str = '"1"', timestamp: str = '"5"') -> str:
    """A media frame with its numbers written verbatim (JSON that json.dumps would not write)."""
    # %-formatting: the template is JSON, whose braces str.format would need doubled
    return ('{"event": "media", "streamSid": "%s", "media": {"track": "inbound", "chunk": %s, '  # noqa: UP031
            '"timestamp": %s, "payload": "%s"}}' % (SID, chunk, timestamp, PAYLOAD))


def _start_with(**start_fields) -> str:
    start = json.loads(TWILIO_START)
    start["start"].update(start_fields)
    return json.dumps(start)


@pytest.mark.parametrize(("frame", "complaint"), [
    (_raw_media(chunk="Infinity"), "JSON"),
    (_raw_media(chunk="-Infinity"), "JSON"),
    (_raw_media(chunk="NaN"), "JSON"),
    (_raw_media(timestamp="1e400"), "JSON"),
    (_raw_media(chunk="1" * 5000), "JSON"),
    (_raw_media(chunk="1.5"), "chunk"),
    (_raw_media(timestamp="5.0"), "timestamp"),
    (_raw_media(chunk="true"), "chunk"),
    (_raw_media(chunk="[1]"), "chunk"),
    (_raw_media(chunk='{"n": 1}'), "chunk"),
    (_raw_media(chunk='"-1"'), "chunk"),
    (_raw_media(chunk='"1e3"'), "chunk"),
    (_raw_media(chunk='" 7 "'), "chunk"),
    (_raw_media(chunk='"\u0661"'), "chunk"),  # ARABIC-INDIC DIGIT ONE: int() would take it
    (_raw_media(chunk='"%s"' % ("9" * 5000)), "chunk"),
    (_raw_media(timestamp=str(2 ** 64)), "timestamp"),
    (_start_with(tracks=5), "tracks"),
    (_start_with(tracks="inbound"), "tracks"),
    (_start_with(tracks=["inbound", 5]), "tracks"),
    (_start_with(tracks={"inbound": True}), "tracks"),
    (_start_with(mediaFormat={"sampleRate": 8000.5}), "sampleRate"),
    (_start_with(mediaFormat={"channels": False}), "channels"),
], ids=["chunk-infinity", "chunk-minus-infinity", "chunk-nan", "timestamp-overflows-to-infinity",
        "chunk-too-many-digits", "chunk-fraction", "timestamp-float", "chunk-bool", "chunk-list",
        "chunk-object", "chunk-negative", "chunk-exponent-string", "chunk-padded-string", "chunk-non-ascii-digit",
        "chunk-string-too-many-digits", "timestamp-beyond-64-bits", "tracks-number", "tracks-string",
        "tracks-not-all-strings", "tracks-object", "sample-rate-fraction", "channels-bool"])
def test_numbers_are_finite_whole_numbers_and_tracks_a_list_of_strings(frame: str, complaint: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_event(frame)
    assert complaint in str(caught.value)
    assert len(str(caught.value)) < 200, "the complaint quotes a bad value only in part"


def test_numbers_twilio_sends_as_strings_or_as_json_numbers_are_both_read() -> None:
    assert parse_event(_raw_media(chunk="7", timestamp="140")).chunk == 7
    assert parse_event(_raw_media(chunk='"0"', timestamp='"0"')).timestamp_ms == 0
    assert parse_event(_start_with(tracks=["inbound", "outbound"])).tracks == ("inbound", "outbound")
    assert parse_event(_start_with(tracks=[])).tracks == ("inbound",)


def test_any_other_failure_inside_the_parser_is_still_a_protocol_error(monkeypatch) -> None:
    """The edge drops ProtocolErrors and keeps the call; anything else would end it."""
    from services.telephony import media_streams

    def broken(msg: dict) -> Start:
        raise KeyError("a bug in a field reader")

    monkeypatch.setattr(media_streams, "_start", broken)
    with pytest.raises(ProtocolError) as caught:
        parse_event(TWILIO_START)
    assert "KeyError" in str(caught.value)


# --- outbound -------------------------------------------------------------------------------------

def test_media_message_is_exactly_what_twilio_expects() -> None:
    msg = json.loads(media_message(SID, ULAW))
    assert msg == {"event": "media", "streamSid": SID, "media": {"payload": PAYLOAD}}
    assert base64.b64decode(msg["media"]["payload"]) == ULAW


def test_mark_and_clear_messages_are_exactly_what_twilio_expects() -> None:
    assert json.loads(mark_message(SID, "r3:s2")) == {
        "event": "mark", "streamSid": SID, "mark": {"name": "r3:s2"}}
    assert json.loads(clear_message(SID)) == {"event": "clear", "streamSid": SID}


def test_parse_outbound_reads_back_what_we_send() -> None:
    media = parse_outbound(media_message(SID, ULAW))
    assert (media.event, media.stream_sid, media.payload) == ("media", SID, ULAW)
    mark = parse_outbound(mark_message(SID, "r1:s1"))
    assert (mark.event, mark.name) == ("mark", "r1:s1")
    assert parse_outbound(clear_message(SID)).event == "clear"


@pytest.mark.parametrize("text", [
    '{"event": "clear"}',
    '{"event": "clear", "streamSid": ""}',
    '{"event": "media", "media": {"payload": ""}}',
])
def test_parse_outbound_rejects_a_message_without_stream_sid(text: str) -> None:
    with pytest.raises(ProtocolError, match="streamSid"):
        parse_outbound(text)


def test_parse_outbound_rejects_events_twilio_does_not_accept() -> None:
    with pytest.raises(ProtocolError, match="'hangup'"):
        parse_outbound(json.dumps({"event": "hangup", "streamSid": SID}))


# --- StreamSender -----------------------------------------------------------------------------------

class Socket:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[str] = []
        self.fail = fail
        self.closes = 0

    async def send_text(self, text: str) -> None:
        if self.fail:
            raise ConnectionResetError("socket gone")
        self.sent.append(text)

    async def close(self) -> None:
        self.closes += 1


async def test_sender_sends_well_formed_media_mark_and_clear() -> None:
    socket = Socket()
    sender = StreamSender(socket.send_text, SID, socket.close)
    assert await sender.media(ULAW) is True
    assert await sender.mark("r1:s1") is True
    assert await sender.clear() is True
    assert [json.loads(t) for t in socket.sent] == [
        {"event": "media", "streamSid": SID, "media": {"payload": PAYLOAD}},
        {"event": "mark", "streamSid": SID, "mark": {"name": "r1:s1"}},
        {"event": "clear", "streamSid": SID},
    ]
    assert sender.closed is False


async def test_a_dead_socket_flips_closed_instead_of_raising() -> None:
    socket = Socket(fail=True)
    sender = StreamSender(socket.send_text, SID, socket.close)
    assert await sender.media(ULAW) is False
    assert sender.closed is True
    socket.fail = False
    assert await sender.mark("late") is False  # nothing more is written after the failure
    assert await sender.clear() is False
    assert socket.sent == []


async def test_close_calls_the_close_callback_once() -> None:
    socket = Socket()
    sender = StreamSender(socket.send_text, SID, socket.close)
    await sender.close()
    await sender.close()
    assert socket.closes == 1
    assert sender.closed is True
    assert await sender.media(ULAW) is False
    assert socket.sent == []


async def test_a_failing_close_callback_does_not_raise() -> None:
    async def broken_close() -> None:
        raise RuntimeError("already closed")

    sender = StreamSender(Socket().send_text, SID, broken_close)
    await sender.close()
    assert sender.closed is True


async def test_only_one_message_is_written_at_a_time() -> None:
    release = asyncio.Event()
    writing: list[str] = []
    overlapped = False

    async def slow_send(text: str) -> None:
        nonlocal overlapped
        overlapped = overlapped or bool(writing)
        writing.append(text)
        await release.wait()
        writing.remove(text)

    sender = StreamSender(slow_send, SID)
    first = asyncio.create_task(sender.media(ULAW))
    second = asyncio.create_task(sender.clear())
    for _ in range(5):
        await asyncio.sleep(0)  # let both tasks run as far as they can
    assert len(writing) == 1
    release.set()
    assert await asyncio.gather(first, second) == [True, True]
    assert overlapped is False
