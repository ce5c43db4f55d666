"""The call log's words are the strings already in the database and the JSON API: renaming a
member is free, changing a value is a migration (and a break for every API client)."""

from __future__ import annotations

import json

from services.storage.vocabulary import (
    ACTIVE_BOOKING,
    BargeIn,
    BookingStatus,
    CallMode,
    CallStatus,
    EndReason,
    EventKind,
    NotAnInterruption,
    Outcome,
    SmsStatus,
    Speaker,
    twilio_ended,
)


def test_the_stored_values_are_the_strings_rows_already_hold():
    assert tuple(CallStatus) == ("in-progress", "completed", "abnormal")
    assert tuple(CallMode) == ("stream", "legacy")
    assert tuple(Outcome) == ("booked", "message", "transferred", "hung_up", "error", "none")
    assert tuple(Speaker) == ("caller", "zylin")
    assert tuple(BookingStatus) == ("booked", "moved", "cancelled") and ACTIVE_BOOKING == ("booked", "moved")
    assert tuple(SmsStatus) == ("pending", "sent", "failed", "off")
    assert set(EventKind) == {"tool", "transfer", "transfer_answered", "transfer_failed", "hang_up", "barge_in",
                              "interruption_ignored",
                              "dtmf", "provider_error", "tts_fallback", "tts_reconnect", "tts_reworded",
                              "speculative_reply", "not_heard"}
    assert set(EndReason) == {"stop event", "socket closed", "twilio stopped reading", "error",
                              "zylin ended the call", "transferred to a person", "maximum call length",
                              "server stopped mid-call (closed by the sweep)"}
    assert twilio_ended("completed") == "twilio: completed"
    assert tuple(BargeIn) == ("voice", "words", "interrupting word", "new turn")
    assert tuple(NotAnInterruption) == ("backchannel", "too short")


def test_a_member_reads_and_serializes_as_its_plain_string():
    assert json.dumps({"kind": EventKind.BARGE_IN}) == '{"kind": "barge_in"}'
    assert f"{CallStatus.IN_PROGRESS}" == "in-progress" and str(Outcome.HUNG_UP) == "hung_up"
