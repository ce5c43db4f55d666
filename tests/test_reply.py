"""The reply lifecycle (services/orchestrator/reply.py): which steps exist, that every other step
raises where it is attempted, and how each path of a call walks it."""

from __future__ import annotations

from typing import Any, cast

import pytest

from services.orchestrator.latency import TurnLatency
from services.orchestrator.record import TurnRecord
from services.orchestrator.reply import InvalidTransition, Reply, ReplyState
from services.orchestrator.speaker import Speaker, SpokenSentence

S = ReplyState

# Written out here rather than read from reply.STEPS: this is the design the engine relies on.
ALLOWED: set[tuple[ReplyState, ReplyState]] = {
    (S.SPEAKING, S.SENT), (S.SPEAKING, S.CUT), (S.SPEAKING, S.INTERRUPTED), (S.SPEAKING, S.SUPERSEDED),
    (S.SENT, S.PLAYED), (S.SENT, S.CUT), (S.SENT, S.INTERRUPTED), (S.SENT, S.SUPERSEDED),
    (S.CUT, S.INTERRUPTED),
    (S.SPECULATIVE, S.SPEAKING), (S.SPECULATIVE, S.DISCARDED),   # committed, or the caller went on
}


def reply(state: ReplyState = S.SPEAKING, sentences: list[SpokenSentence] | None = None) -> Reply:
    none = cast(Any, None)
    speaker = Speaker(none, none, 1, TurnLatency(), sentences=sentences or [])
    made = Reply(1, speaker.latency, speaker, TurnRecord(0, "zylin", "", 0.0))
    made.state = state
    return made


def sentence(text: str, played: bool, sent_at: float | None = 0.0, audio_bytes: int = 8000) -> SpokenSentence:
    s = SpokenSentence(text, "1.0", None)
    s.first_sent_at, s.audio_bytes = sent_at, audio_bytes
    s.played_at = 1.0 if played else None
    return s


def test_a_reply_starts_speaking() -> None:
    assert reply().state is S.SPEAKING


@pytest.mark.parametrize(("start", "to"), [(a, b) for a in S for b in S if (a, b) in ALLOWED])
def test_each_step_of_the_lifecycle_moves_and_returns_the_state_left(start: ReplyState, to: ReplyState) -> None:
    r = reply(start)
    assert r.move(to) is start
    assert r.state is to


@pytest.mark.parametrize(("start", "to"), [(a, b) for a in S for b in S if (a, b) not in ALLOWED])
def test_any_other_step_raises_where_it_is_attempted_and_changes_nothing(start: ReplyState, to: ReplyState) -> None:
    r = reply(start)
    with pytest.raises(InvalidTransition, match=f"from {start.value} to {to.value}"):
        r.move(to)
    assert r.state is start


def test_the_final_states_are_those_whose_turn_is_recorded_or_never_will_be() -> None:
    assert {s for s in S if s.final} == {S.PLAYED, S.INTERRUPTED, S.SUPERSEDED, S.DISCARDED}


def test_a_speculative_reply_is_neither_live_nor_playing() -> None:
    r = reply(S.SPECULATIVE)
    assert not r.live and not r.playing
    assert all(not any((s, to) in ALLOWED for to in S) for s in S if s.final)  # nothing follows them


@pytest.mark.parametrize("path", [
    pytest.param([S.SENT, S.PLAYED], id="greeting, canned line or brain reply heard in full"),
    pytest.param([S.CUT, S.INTERRUPTED], id="barge-in before anything was sent"),
    pytest.param([S.SENT, S.CUT, S.INTERRUPTED], id="barge-in after all was sent"),
    pytest.param([S.SUPERSEDED], id="a new reply while this one still speaks"),
    pytest.param([S.SENT, S.SUPERSEDED], id="a new reply while this one still plays"),
    pytest.param([S.INTERRUPTED], id="the call stops mid-reply"),
    pytest.param([S.SENT, S.INTERRUPTED], id="the call stops while it plays"),
    pytest.param([S.CUT, S.INTERRUPTED], id="the call stops during a barge-in"),
])
def test_every_path_of_a_call_leaves_speaking_once_and_ends_final_once(path: list[ReplyState]) -> None:
    r = reply()
    left = [r.move(to) for to in path]
    assert left.count(S.SPEAKING) == 1                   # history gets the messages once
    assert [to.final for to in path] == [False] * (len(path) - 1) + [True]   # recorded once, at the end
    with pytest.raises(InvalidTransition):
        r.move(S.INTERRUPTED)                            # a finished reply cannot be finished again


def test_playing_while_speaking_and_while_a_sent_sentence_has_not_played() -> None:
    unplayed = [sentence("Hello.", played=True), sentence("How can I help?", played=False)]
    assert reply(S.SPEAKING).playing
    assert reply(S.SPEAKING, [sentence("Hello.", played=True)]).playing   # more may follow
    assert reply(S.SENT, unplayed).playing
    assert not reply(S.SENT, [sentence("Hello.", played=True)]).playing
    assert not reply(S.SENT).playing                                       # nothing was said
    for state in (S.PLAYED, S.CUT, S.INTERRUPTED, S.SUPERSEDED):
        assert not reply(state, unplayed).playing


def test_only_speaking_and_sent_replies_are_live() -> None:
    assert {s for s in S if reply(s).live} == {S.SPEAKING, S.SENT}


def test_heard_keeps_played_sentences_and_the_elapsed_share_of_the_playing_one() -> None:
    first = sentence("We open at nine.", played=True)
    second = sentence("We close at five on weekdays.", played=False, sent_at=0.5, audio_bytes=16000)  # 2 s
    first.played_at = 1.0
    heard = reply(S.CUT, [first, second]).heard(now=2.0)   # half of the second sentence has played
    assert heard == {id(None): "We open at nine. We close at..."}
