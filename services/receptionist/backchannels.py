"""What a caller's words over Zylin's voice mean for the turn: listening, or taking it.

A caller who says "mm-hm" or "right" while Zylin talks is listening, not asking Zylin to stop;
"wait" or "sorry" is asking, however short. Anything else takes the turn once there is enough of
it (services/orchestrator/interruption.py decides "enough"). The lists are the receptionist's:
they are about how people talk on the phone, not about audio.
"""

from __future__ import annotations

import re
from enum import Enum

# Listening noises and acknowledgements. Not "yes" or "no": over the end of a question they are
# answers ("...shall I book it?" "Yes"), and "no" asks Zylin to stop.
BACKCHANNELS = frozenset({
    "mhm", "mm", "mmm", "hm", "hmm", "uh-huh", "uh huh", "uhuh", "um-hum", "ah", "oh", "aha",
    "okay", "ok", "k", "yeah", "yep", "yup", "right", "alright", "all right", "sure", "cool",
    "i see", "got it", "gotcha", "great", "good", "fine", "perfect", "thanks", "thank you",
})
# Words that are a request to stop by themselves. ("um" and "uh" are in neither list: a caller who
# hesitates over Zylin is starting to talk, and is heard once there is enough of it.)
INTERRUPTING = frozenset({
    "wait", "stop", "sorry", "hold on", "hang on", "no", "nope", "excuse me", "pardon",
    "one moment", "one second", "just a second", "actually",
    "uh-uh", "nuh-uh", "mm-mm",   # "no", as Deepgram spells it with filler_words on
})

_LONGEST = max(len(p.split()) for p in BACKCHANNELS | INTERRUPTING)
_MM = re.compile(r"^(m+h?m+|hm+|m+-hm+)$")   # "mm", "mmm", "mhm", "mmhmm", "mm-hm", "hmm"
_NOT_WORD = re.compile(r"[^\w'\- ]+")


class Words(Enum):
    BACKCHANNEL = "backchannel"     # the caller is listening: Zylin carries on
    INTERRUPTING = "interrupting"   # the caller asks Zylin to stop: at once
    OTHER = "other"                 # the caller is saying something: a turn of their own


def normalize(text: str) -> list[str]:
    """Lower-case words without punctuation; every "mm"-like noise ("Mm-hmm", "mmm", "hm") is "mhm"."""
    words = _NOT_WORD.sub(" ", text.lower()).replace("-", " - ").split()
    joined = " ".join(words).replace(" - ", "-")
    out: list[str] = []
    for word in joined.split():
        word = word.strip("-'")
        if not word:
            continue
        out.append("mhm" if _MM.match(word) else word)
    return out


def _phrases(words: list[str]) -> list[str] | None:
    """`words` cut greedily into known phrases (longest first); None if some word is in none."""
    known = BACKCHANNELS | INTERRUPTING
    out: list[str] = []
    i = 0
    while i < len(words):
        for size in range(min(_LONGEST, len(words) - i), 0, -1):
            phrase = " ".join(words[i:i + size])
            if phrase in known:
                out.append(phrase)
                i += size
                break
        else:
            return None
    return out


def classify(text: str) -> Words:
    """INTERRUPTING when any phrase of `text` asks Zylin to stop ("oh wait"), BACKCHANNEL when it is
    made of listening noises only ("mm-hm, okay"), OTHER otherwise (and for no words at all)."""
    words = normalize(text)
    if not words:
        return Words.OTHER
    joined = " ".join(words)
    if any(f" {p} " in f" {joined} " for p in INTERRUPTING):
        return Words.INTERRUPTING
    phrases = _phrases(words)
    if phrases is not None and all(p in BACKCHANNELS for p in phrases):
        return Words.BACKCHANNEL
    return Words.OTHER
