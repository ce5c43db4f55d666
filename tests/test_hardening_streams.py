"""A stream token is good for one stream of one call, between the numbers it names, for a while:
a second socket for the same call (at once, or after it ended) and a start that claims another
caller's number are refused with 1008, and the real call loses nothing."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from services.simulator.caller import CallerLine
from services.telephony import media_streams as wire

CALLER = "+15550104444"


async def twiml_for(zylin, call_sid: str) -> dict[str, str]:
    """The stream's parameters the voice webhook hands Twilio for this call from CALLER."""
    return (await zylin.stream_twiml(call_sid, from_number=CALLER))[1]


async def start_and_wait_for_close(zylin, call_sid: str, params: dict[str, str]) -> int | None:
    """Open a stream with these parameters; the close code if Zylin closes it, None if it greets."""
    async with zylin.media_socket() as ws:
        await ws.send(wire.inbound_connected())
        await ws.send(wire.inbound_start(1, "MZ" + "9" * 32, call_sid, "AC" + "9" * 32, params))
        try:
            first = await asyncio.wait_for(ws.recv(), 5)
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
        assert wire.parse_outbound(first).event == "media"
        return None


async def test_a_second_socket_for_a_live_call_is_refused_and_the_call_goes_on(zylin):
    caller = zylin.caller(from_number=CALLER)
    call = asyncio.create_task(caller.call([CallerLine("What are your opening hours?"),
                                            CallerLine("How much is a cleaning?")]))
    # Wait until the real stream is admitted, then replay its start on a second socket.
    deadline = asyncio.get_running_loop().time() + 10
    while not zylin.recorder.calls:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    [call_sid] = zylin.recorder.calls
    result_params = await twiml_for(zylin, call_sid)  # a fresh TwiML for the same call: still stream 0
    code = await start_and_wait_for_close(zylin, call_sid, {**result_params, "mockScript": "[]"})
    result = await call
    record = await zylin.recorder.wait_ended(call_sid)

    assert code == 1008
    assert not result.timeouts and not result.protocol_errors
    assert [t.text for t in record["turns"] if t.speaker == "caller"] == [
        "What are your opening hours?", "How much is a cleaning?"]


async def test_a_replayed_start_after_the_call_ended_is_refused(zylin):
    result = await zylin.caller(from_number=CALLER).call([CallerLine("Hello")])
    await zylin.recorder.wait_ended(result.call_sid)
    code = await start_and_wait_for_close(zylin, result.call_sid,
                                          {**result.parameters, "mockScript": json.dumps(["Cancel my appointment"])})
    assert code == 1008
    assert len([c for c in zylin.recorder.calls if c == result.call_sid]) == 1


@pytest.mark.parametrize("field,value", [("from", "+15550109999"), ("to", "+15550108888"), ("segment", "7")])
async def test_a_start_that_claims_other_numbers_than_its_token_is_refused(zylin, field, value):
    call_sid = "CA" + "7" * 32
    params = await twiml_for(zylin, call_sid)
    assert await start_and_wait_for_close(zylin, call_sid, {**params, field: value}) == 1008


async def test_the_stream_the_webhook_named_is_admitted(zylin):
    call_sid = "CA" + "6" * 32
    params = await twiml_for(zylin, call_sid)
    assert await start_and_wait_for_close(zylin, call_sid, {**params, "mockScript": "[]"}) is None
