"""Whole phone calls through the real server: signed webhook, /media-stream, mock providers."""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET

import httpx
import pytest
import websockets
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from twilio.request_validator import RequestValidator

from services.audio.codec import FRAME_BYTES, rms, ulaw_to_pcm
from services.simulator.caller import CallerLine
from services.simulator.voice import speech_ulaw
from services.telephony import media_streams as wire
from services.telephony.rest import TwilioTelephony
from services.telephony.webhook import StreamClaim, check_stream_token, stream_parameters
from tests.conftest import running_zylin
from tests.factories import AUTH_TOKEN, OWNER_PHONE, PUBLIC_URL, profile_with_an_owner
from tests.fakes.twilio_rest import FakeTwilioRest


def zylin_turns(record: dict) -> list:
    return [t for t in record["turns"] if t.speaker == "zylin"]


def caller_turns(record: dict) -> list:
    return [t for t in record["turns"] if t.speaker == "caller"]


async def test_a_caller_hears_the_greeting_first(zylin):
    result = await zylin.caller().call([])
    record = await zylin.recorder.wait_ended(result.call_sid)

    first_media = result.first_media_after(result.started_at)
    assert first_media is not None
    assert record["info"].greeting_ms is not None and record["info"].greeting_ms < 500
    greeting = zylin_turns(record)[0]
    assert greeting.text.startswith("Thanks for calling Bright Smile Dental")
    assert not greeting.interrupted
    heard = ulaw_to_pcm(result.heard_ulaw)
    assert rms(heard) > 300, "the greeting must be audible, not silence"
    assert result.marks_echoed, "the greeting ends with a mark that Twilio echoes"


async def test_each_scripted_line_is_answered_in_turn(zylin):
    lines = ["What are your opening hours?", "How much is a cleaning?", "Do you have parking?"]
    result = await zylin.caller().call([CallerLine(text) for text in lines])
    record = await zylin.recorder.wait_ended(result.call_sid)

    assert not result.timeouts and not result.protocol_errors
    assert [t.text for t in caller_turns(record)] == lines
    replies = [t.text for t in zylin_turns(record)][1:]
    assert len(replies) == 3
    assert "open Monday 9 am to 5 pm" in replies[0]
    assert "$120" in replies[1]
    assert "free parking" in replies[2]
    assert all(ms is not None and ms < 3000 for ms in result.reply_latencies_ms())
    for turn in caller_turns(record):
        latency = turn.latency.as_dict()
        assert all(latency[k] is not None for k in ("asr_ms", "llm_ttft_ms", "tts_ttfb_ms",
                                                     "first_audio_ms", "heard_ms", "overhead_ms"))
        assert latency["first_audio_ms"] >= latency["asr_ms"]
        assert latency["heard_ms"] > latency["first_audio_ms"]
    assert record["ended"] == "stop event"


async def test_a_caller_who_barges_in_hears_the_reply_stop_and_history_keeps_only_what_was_heard(zylin):
    # Real-time pace: what was heard is estimated from wall-clock playback, as on a real line.
    result = await zylin.caller(speed=1.0).call([
        CallerLine("What are your opening hours?", pause_before_ms=100),
        CallerLine("Sorry, how much is a cleaning?", barge_in_after_ms=1500),
    ])
    record = await zylin.recorder.wait_ended(result.call_sid)

    assert result.clears, "a barge-in must send `clear` so Twilio drops the unplayed audio"
    hours_reply = next(t for t in zylin_turns(record) if "open" in t.text)
    assert hours_reply.interrupted
    # "Sorry" would stop Zylin at once, but the mock's first words come with the same frame as the
    # 300 ms of speech that stop it anyway (tests/test_turns.py has the word deciding).
    assert [e.detail["why"] for e in record["events"] if e.kind == "barge_in"] == ["voice"]
    assert hours_reply.heard_text and len(hours_reply.heard_text) < len(hours_reply.text)
    assert hours_reply.heard_text.startswith("We're open")
    assert any(e.kind == "barge_in" for e in record["events"])
    history = [(m.role, m.content) for m in record["history"]]
    assistant_after_hours = history[history.index(("user", "What are your opening hours?")) + 1]
    assert assistant_after_hours[0] == "assistant"
    assert assistant_after_hours[1] == hours_reply.heard_text, "history holds only the heard part"
    assert "Saturday" not in assistant_after_hours[1]
    assert "$120" in zylin_turns(record)[-1].text, "the interrupting question is answered"


async def test_a_backchannel_over_a_reply_stops_nothing_and_the_reply_is_recorded_whole():
    # The mock's first interim result comes 300 ms into the simulated "Mm-hmm" (600 ms long, longer
    # than most): with the bound at 400 ms its words decide, not its length. Half speed's margin.
    async with running_zylin(interrupt_min_speech_ms=400) as zylin:
        result = await zylin.caller(speed=2.0).call([
            CallerLine("What are your opening hours?", pause_before_ms=100),
            CallerLine("Mm-hmm.", barge_in_after_ms=1000),
        ])
        record = await zylin.recorder.wait_ended(result.call_sid)

    assert not result.timeouts and not result.clears, "Zylin talked on: no `clear`"
    hours_reply = next(t for t in zylin_turns(record) if "open" in t.text)
    assert not hours_reply.interrupted and hours_reply.heard_text == hours_reply.text
    assert "Saturday" in hours_reply.text, "the whole reply was said"
    mm_hm = result.lines[1]
    assert mm_hm.end < max(t for t, name in result.marks_echoed if name.startswith("2.")), \
        "the backchannel was said while the reply played"
    assert [t.text for t in caller_turns(record)] == ["What are your opening hours?"], "no turn of its own"
    assert len(zylin_turns(record)) == 2, "nothing answered the backchannel"
    assert not any(e.kind == "barge_in" for e in record["events"])
    [ignored] = [e for e in record["events"] if e.kind == "interruption_ignored"]
    assert ignored.detail["why"] == "backchannel" and ignored.detail["words"] == "Mm-hmm."
    assert ignored.detail["speech_ms"] >= 500
    assert ("user", "Mm-hmm.") not in [(m.role, m.content) for m in record["history"]]


async def test_a_real_interruption_without_interrupting_words_stops_zylin_after_the_minimum_speech(zylin):
    result = await zylin.caller(speed=1.0).call([
        CallerLine("What are your opening hours?", pause_before_ms=100),
        CallerLine("How much is a cleaning?", barge_in_after_ms=1500),
    ])
    record = await zylin.recorder.wait_ended(result.call_sid)

    # The VAD's minimum speech comes before the mock's first interim words (~300 ms into the line),
    # which the recognizer delivers after that frame: the duration decides.
    assert [e.detail["why"] for e in record["events"] if e.kind == "barge_in"] == ["voice"]
    [clear] = result.clears
    reaction_s = clear - result.lines[1].start
    # Not before INTERRUPT_MIN_SPEECH_MS of speech: its n-th frame leaves n - 1 periods after the
    # first, and the decision waits for it; the upper bound is the 400 ms target plus a loaded
    # machine's slack.
    frames = -(-zylin.settings.interrupt_min_speech_ms // 20)
    assert (frames - 1) * 0.02 - 0.01 <= reaction_s < 0.5, reaction_s
    hours_reply = next(t for t in zylin_turns(record) if "open" in t.text)
    assert hours_reply.interrupted and len(hours_reply.heard_text) < len(hours_reply.text)
    history = [(m.role, m.content) for m in record["history"]]
    assert history[history.index(("user", "What are your opening hours?")) + 1] == \
        ("assistant", hours_reply.heard_text)
    assert "$120" in zylin_turns(record)[-1].text


async def test_heard_ms_is_when_playback_starts_not_when_the_first_sentence_has_played(zylin):
    result = await zylin.caller().call([CallerLine("What are your opening hours?")])
    record = await zylin.recorder.wait_ended(result.call_sid)

    latency = caller_turns(record)[0].latency
    # The caller's ear takes the first frame at its next tick and echoes the mark after it at the
    # tick after that: after the first audio, within two periods (its ticks catch up when one is
    # late, so two can come closer than a period), not when the first sentence has played.
    period_ms = 20 / result.speed
    assert 0 < latency.heard_ms - latency.first_audio_ms <= 2 * period_ms + 100
    echoed = dict((name, t) for t, name in result.marks_echoed)
    assert "2.start" in echoed
    first_sentence_heard_ms = (echoed["2.0"] - latency.speech_end) * 1000
    assert latency.heard_ms < first_sentence_heard_ms - 100, "the old figure: the first sentence's end"


async def test_pressing_zero_takes_the_escalation_path(zylin):
    result = await zylin.caller().call([CallerLine(dtmf="0")])
    record = await zylin.recorder.wait_ended(result.call_sid)

    assert [d for _, d in result.dtmf_sent] == ["0"]
    tools = [e.detail["name"] for e in record["events"] if e.kind == "tool"]
    assert tools == ["transfer_to_human"]
    # No Twilio credentials in this server: nobody can be dialled, so a message is offered.
    assert "take a message" in zylin_turns(record)[-1].text


async def test_a_transfer_dials_the_owner_through_twilio_rest_after_the_line_has_played(tmp_path):
    profile = profile_with_an_owner(tmp_path, owner_sms="")
    async with FakeTwilioRest(auth_token=AUTH_TOKEN) as twilio:
        telephony = TwilioTelephony(twilio.account_sid, AUTH_TOKEN, api_base_url=twilio.url)
        async with running_zylin(telephony=telephony, business_profile=str(profile)) as zylin:
            result = await zylin.caller().call([CallerLine("Can I talk to a real person please?")],
                                               hang_up=False)
            record = await zylin.recorder.wait_ended(result.call_sid)

    [update] = twilio.call_updates
    assert update.call_sid == result.call_sid and update.status == 200
    assert "<Dial" in update.form["Twiml"] and OWNER_PHONE in update.form["Twiml"]
    connecting = zylin_turns(record)[-1]
    assert "connecting you" in connecting.text and not connecting.interrupted
    # The line was heard before the call was moved: its mark came back before the REST request.
    assert update.at >= max(t for t, _ in result.marks_echoed)
    assert any(e.kind == "transfer" for e in record["events"])


async def test_a_stop_event_ends_the_session(zylin):
    result = await zylin.caller().call([CallerLine("Hello")], hang_up=True)
    record = await zylin.recorder.wait_ended(result.call_sid)
    assert record["ended"] == "stop event"


async def test_a_caller_saying_goodbye_is_hung_up_after_the_goodbye_plays(zylin):
    result = await zylin.caller().call([CallerLine("That's all, bye!")], hang_up=False)
    record = await zylin.recorder.wait_ended(result.call_sid)

    assert result.closed_by_server
    assert record["ended"] == "zylin ended the call"
    goodbye = zylin_turns(record)[-1]
    assert "Goodbye" in goodbye.text and not goodbye.interrupted
    last_mark = max(t for t, _ in result.marks_echoed)
    assert result.ended_at >= last_mark, "the socket closes only after the goodbye was heard"


async def test_a_silent_caller_is_prompted_then_the_call_ends():
    async with running_zylin(idle_timeout_s=0.6) as zylin:
        result = await zylin.caller().call([], hang_up=False)
        record = await zylin.recorder.wait_ended(result.call_sid)
    texts = [t.text for t in zylin_turns(record)]
    assert texts[1] == "Are you still there?"
    assert texts[2].startswith("I haven't heard anything")
    assert record["ended"] == "zylin ended the call" and result.closed_by_server


async def test_a_call_longer_than_the_limit_is_ended_politely():
    async with running_zylin(max_call_s=1.0) as zylin:
        result = await zylin.caller().call([], hang_up=False)
        record = await zylin.recorder.wait_ended(result.call_sid)
    assert "time limit" in zylin_turns(record)[-1].text
    assert result.closed_by_server


async def test_a_caller_who_hangs_up_mid_reply_leaves_a_complete_record(zylin):
    call_sid, stream_sid = "CA" + "b" * 32, "MZ" + "b" * 32
    params = {**stream_parameters(StreamClaim(call_sid, "+15550005555", ""), zylin.settings.token_secret),
              "mockScript": json.dumps(["What are your opening hours?"])}
    speech = speech_ulaw("What are your opening hours?") + b"\xff" * 160 * 25
    async with zylin.media_socket() as ws:
        await ws.send(wire.inbound_connected())
        await ws.send(wire.inbound_start(1, stream_sid, call_sid, "AC" + "b" * 32, params))
        for n in range(0, len(speech), 160):
            await ws.send(wire.inbound_media(n // 160 + 2, stream_sid, n // 160 + 1, n // 8, speech[n:n + 160]))
        marks = 0
        while marks < 1:  # the greeting's end mark (not its start mark): everything after it is the reply
            out = wire.parse_outbound(await asyncio.wait_for(ws.recv(), 10))
            marks += out.event == "mark" and not out.name.endswith(".start")
        reply_audio = wire.parse_outbound(await asyncio.wait_for(ws.recv(), 10))
        if reply_audio.event == "clear":  # the speech (sent all at once) cut the greeting's playback
            reply_audio = wire.parse_outbound(await asyncio.wait_for(ws.recv(), 10))
        assert reply_audio.event == "media"
    # The socket is gone without a `stop`: the caller hung up while the reply was playing.
    record = await zylin.recorder.wait_ended(call_sid)
    assert record["ended"] == "socket closed"
    assert [t.text for t in caller_turns(record)] == ["What are your opening hours?"]
    reply = zylin_turns(record)[-1]
    assert reply.interrupted and "open" in reply.text
    assert caller_turns(record)[0].latency.first_audio_ms is not None


async def test_an_unsigned_webhook_is_refused(zylin):
    result = await zylin.caller().call([CallerLine("hi")], sign=False)
    assert result.webhook_status == 403
    assert not result.connected


async def test_a_forged_stream_upgrade_is_closed_with_1008(zylin):
    async with websockets.connect(zylin.ws_url, additional_headers={"X-Twilio-Signature": "forged"}) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd.code == 1008


async def test_a_start_with_a_bad_stream_token_is_closed_with_1008(zylin):
    async with zylin.media_socket() as ws:
        await ws.send(wire.inbound_connected())
        await ws.send(wire.inbound_start(1, "MZ" + "1" * 32, "CA" + "1" * 32, "AC" + "1" * 32,
                                         {"token": "not-the-token"}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd.code == 1008


async def test_malformed_frames_are_dropped_without_breaking_a_concurrent_healthy_call(zylin):
    healthy = asyncio.create_task(zylin.caller().call([CallerLine("What are your opening hours?"),
                                                       CallerLine("How much is a cleaning?")]))
    call_sid, stream_sid = "CA" + "f" * 32, "MZ" + "f" * 32
    garbage = [
        "not json", "[1,2,3]", '{"event":"nope"}', '{"event":"media"}',
        '{"event":"media","streamSid":"' + stream_sid + '","media":{"payload":"%%%","chunk":"1","timestamp":"0"}}',
        '{"event":"media","streamSid":"' + stream_sid + '","media":{"payload":"AAAA","chunk":"x","timestamp":"0"}}',
        '{"event":"mark","streamSid":"' + stream_sid + '"}', '{"event":"dtmf","streamSid":"' + stream_sid + '"}',
        "[" * 5000 + "]" * 5000, "x" * 70000,
        wire.inbound_media(1, "MZ" + "0" * 32, 1, 0, b"\xff" * 160),  # wrong streamSid
    ]
    async with zylin.media_socket() as ws:
        await ws.send(wire.inbound_media(1, stream_sid, 1, 0, b"\xff" * 160))  # before start
        await ws.send(b"\x00\x01binary")
        await ws.send(wire.inbound_connected())
        await ws.send(wire.inbound_start(2, stream_sid, call_sid, "AC" + "f" * 32,
                                         stream_parameters(StreamClaim(call_sid, "+15550002222", ""),
                                                           zylin.settings.token_secret)))
        for frame in garbage:
            await ws.send(frame)
            await ws.send(b"\xde\xad")
        # The fuzzed stream itself is still alive: it greets and keeps accepting good frames.
        greeting = await asyncio.wait_for(ws.recv(), 5)
        assert wire.parse_outbound(greeting).event == "media"
        await ws.send(wire.inbound_media(3, stream_sid, 2, 20, b"\xff" * 160))
        await ws.send(wire.inbound_stop(4, stream_sid, call_sid, "AC" + "f" * 32))
    fuzzed = await zylin.recorder.wait_ended(call_sid)
    assert fuzzed["ended"] == "stop event"

    result = await asyncio.wait_for(healthy, 60)
    record = await zylin.recorder.wait_ended(result.call_sid)
    assert not result.timeouts and not result.protocol_errors
    assert len(zylin_turns(record)) == 3 and record["ended"] == "stop event"


async def test_audio_sent_is_headerless_mu_law_in_whole_20ms_frames(zylin):
    result = await zylin.caller().call([CallerLine("What are your opening hours?")])
    assert not result.protocol_errors
    payloads = result.media_payloads()
    assert payloads
    assert not any(p.startswith(b"RIFF") for p in payloads)
    # Only the last message before each mark may hold a partial frame (a sentence's end).
    kinds = [r.event for r in result.received]
    media_iter = iter(payloads)
    for i, kind in enumerate(kinds):
        if kind != "media":
            continue
        payload = next(media_iter)
        last_before_mark = i + 1 < len(kinds) and kinds[i + 1] == "mark"
        if not last_before_mark:
            assert len(payload) % FRAME_BYTES == 0, f"message {i} is {len(payload)} bytes"
    pcm = ulaw_to_pcm(b"".join(payloads))
    assert len(pcm) == 2 * sum(len(p) for p in payloads)
    assert rms(pcm) > 300


async def test_health_and_readiness(zylin):
    async with httpx.AsyncClient(base_url=zylin.base_url) as http:
        health = await http.get("/health")
        ready = await http.get("/ready")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.status_code == 200
    assert ready.json()["checks"]["providers"] == {"asr": "mock", "llm": "mock", "tts": "mock"}
    assert ready.json()["checks"]["database"] is True


async def test_readiness_fails_when_the_database_is_unreachable(zylin):
    db = zylin.storage.db
    unreachable = create_async_engine("sqlite+aiosqlite:////nonexistent-dir/zylin.db")
    working, db._read = db._read, async_sessionmaker(unreachable)
    try:
        async with httpx.AsyncClient(base_url=zylin.base_url) as http:
            ready = await http.get("/ready")
    finally:
        db._read = working
        await unreachable.dispose()
    assert ready.status_code == 503 and ready.json()["checks"]["database"] is False


async def test_webhook_twiml_streams_to_the_public_wss_url_with_signed_parameters(zylin):
    form = {"CallSid": "CA" + "a" * 32, "From": "+15550003333", "To": "+15550004444"}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_URL + "/api/twilio/voice", form)
    async with httpx.AsyncClient(base_url=zylin.base_url) as http:
        response = await http.post("/api/twilio/voice", data=form, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    body = response.text
    assert '<Stream url="wss://zylin.example.test/media-stream">' in body
    assert body.rstrip().endswith("</Connect></Response>")
    params = {p.get("name"): p.get("value") for p in ET.fromstring(body).iter("Parameter")}
    claim = check_stream_token(form["CallSid"], params, zylin.settings.token_secret)
    assert claim == StreamClaim(form["CallSid"], form["From"], form["To"], 0)
    assert json.dumps(form["From"])[1:-1] in body


async def test_a_caller_who_pauses_mid_sentence_is_answered_once_for_the_whole_sentence(zylin):
    # Two script lines, two speech segments 400 ms apart: the first ends on "um", so its close is
    # held (TURN_HOLD_UNFINISHED_MS, 800) and the second joins the same turn.
    result = await zylin.caller().call([
        CallerLine("I'd like to book um"),
        CallerLine("how much is a cleaning?", pause_before_ms=400, wait_for_reply=False),
    ])
    record = await zylin.recorder.wait_ended(result.call_sid)

    assert not result.timeouts and not result.protocol_errors
    assert [t.text for t in caller_turns(record)] == ["I'd like to book um how much is a cleaning?"]
    assert not any(e.kind == "barge_in" for e in record["events"])
    assert len(zylin_turns(record)) == 2 and "$120" in zylin_turns(record)[1].text
