"""The call log's words: what a call, a turn, an event, a booking and a message can be.

Each is a StrEnum whose values are the strings stored in the database and shown in the JSON API,
so a member equals what was written (`row.status == CallStatus.COMPLETED`) and the tables, the
API and the templates read them unchanged. Twilio's own words (CallStatus, DialCallStatus) are
Twilio's, and stay with the code that reads them (models.py, telephony/webhook.py).
"""

from __future__ import annotations

from enum import StrEnum


class CallStatus(StrEnum):
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    ABNORMAL = "abnormal"        # closed by the sweep: the server stopped mid-call


class CallMode(StrEnum):
    STREAM = "stream"            # Media Streams, audio both ways
    LEGACY = "legacy"            # record mode, one callback per turn (docs/legacy.md)


class Outcome(StrEnum):
    """What a call achieved (`calls.derive_outcome` decides); in the order the call list offers them."""
    BOOKED = "booked"
    MESSAGE = "message"
    TRANSFERRED = "transferred"
    HUNG_UP = "hung_up"          # the caller ended it
    ERROR = "error"
    NONE = "none"                # Zylin said goodbye after a call that needed no action


class EndReason(StrEnum):
    """Why a call's record was closed (`calls.end_reason`); Twilio's own reports are `twilio_ended(...)`.
    The hang_up event carries why Zylin said goodbye."""
    STOP_EVENT = "stop event"                  # Twilio's `stop`: the caller hung up
    SOCKET_CLOSED = "socket closed"
    STUCK = "twilio stopped reading"           # a send outlived SEND_TIMEOUT_S
    ERROR = "error"                            # the media stream failed
    ZYLIN_ENDED = "zylin ended the call"
    TRANSFERRED = "transferred to a person"
    MAX_LENGTH = "maximum call length"
    SWEPT = "server stopped mid-call (closed by the sweep)"


TWILIO_REPORTED = "twilio: "


def twilio_ended(status: str) -> str:
    """The end reason when Twilio reports the call over (a status callback, a hang-up while recording)."""
    return TWILIO_REPORTED + status


class Speaker(StrEnum):
    CALLER = "caller"
    ZYLIN = "zylin"


class EventKind(StrEnum):
    """What happened during a call (`events.kind`); the detail each carries is in the comment."""
    TOOL = "tool"                              # name, arguments, result
    TRANSFER = "transfer"                      # target, reason: Zylin puts the caller through
    TRANSFER_ANSWERED = "transfer_answered"    # status, duration_s: someone took it
    TRANSFER_FAILED = "transfer_failed"        # status, why (Twilio's DialCallStatus); or target (REST)
    HANG_UP = "hang_up"                        # reason: Zylin ends the call
    BARGE_IN = "barge_in"                      # why (BargeIn), heard: the caller cut in
    INTERRUPTION_IGNORED = "interruption_ignored"  # why (NotAnInterruption), words, speech_ms: Zylin went on
    DTMF = "dtmf"                              # digit
    PROVIDER_ERROR = "provider_error"          # provider, error (and for TTS what was heard)
    TTS_FALLBACK = "tts_fallback"              # provider, error, spoken_by: the other voice said it
    TTS_RECONNECT = "tts_reconnect"            # provider, reason: a streaming voice's socket dropped; reopened
    TTS_REWORDED = "tts_reworded"              # provider, asked, said: the voice did not say the text verbatim
    SPECULATIVE_REPLY = "speculative_reply"    # outcome (committed, discarded), lead_ms: begun on an eager end
    NOT_HEARD = "not_heard"                    # misses: record mode heard nothing usable


class BargeIn(StrEnum):
    """Why Zylin stopped for the caller (a barge_in event's `why`)."""
    VOICE = "voice"                            # enough speech, no words yet
    WORDS = "words"                            # enough speech, and words that are not a backchannel
    INTERRUPTING_WORD = "interrupting word"    # "wait", "sorry", "hold on"...: at once, however short
    NEW_TURN = "new turn"                      # the caller finished a turn (or pressed 0) over the reply


class NotAnInterruption(StrEnum):
    """Why caller sound over Zylin's voice did not stop it (an interruption_ignored event's `why`)."""
    BACKCHANNEL = "backchannel"                # "mm-hm", "okay", "right"...: listening, not asking
    TOO_SHORT = "too short"                    # a sound too short for speech, and no words came


class BookingStatus(StrEnum):
    BOOKED = "booked"
    MOVED = "moved"
    CANCELLED = "cancelled"


ACTIVE_BOOKING = (BookingStatus.BOOKED, BookingStatus.MOVED)  # these hold their slot


class SmsStatus(StrEnum):
    """The owner's text about a message."""
    PENDING = "pending"          # not sent yet
    SENT = "sent"
    FAILED = "failed"
    OFF = "off"                  # no owner number to text
