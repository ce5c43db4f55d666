"""Does what the caller said so far sound finished, or are they pausing mid-sentence?

"I'd like to book, um..." or "I'd like to book on..." is a caller thinking, not done: a reply now
answers half a sentence and is cut when they go on. The turn detector holds such a turn a little
longer (services/orchestrator/turns.py). Only the last word decides, and the lists stay short: a
wrong "unfinished" costs a short wait, a wrong "finished" is today's behaviour. Like the
backchannel lists (backchannels.py) they are about how people talk on the phone, not about audio.
"""

from __future__ import annotations

import re

# Hesitation noises. Not "mm-hm" or "mhm": those are backchannels (backchannels.py), a caller
# listening, and "mm" is agreement; "hmm" on its own is thinking.
_FILLER = re.compile(r"^(u+m+|u+h+m*|e+r+m*|h+m+)$")   # "um", "umm", "uh", "uhm", "er", "erm", "hmm"
# Words an English sentence does not end on: conjunctions, prepositions, articles, a possessive,
# a copula. ("for" or "to" can end a question, "Who am I speaking to?": its "?" says it is one.)
DANGLING = frozenset({
    "and", "but", "or", "so", "because", "on", "at", "for", "to", "with", "from", "of",
    "the", "a", "an", "my", "your", "is", "i'd like", "i want", "i need",
})
# ... except where the word is a verb's particle and the phrase is whole.
PHRASAL = frozenset({"hold on", "hang on", "go on", "come on", "carry on", "and so on"})
_LONGEST = max(len(p.split()) for p in DANGLING | PHRASAL)
_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def unfinished(text: str) -> bool:
    """Whether `text` ends on a filler ("um") or on a word a sentence cannot end on ("and", "the",
    "I'd like"): the caller is probably pausing, not done. Punctuation is the recognizer's guess
    and is ignored, except that a closing "?" marks a finished question."""
    words = _WORD.findall(text.lower().replace("\u2019", "'"))
    if not words:
        return False
    if _FILLER.match(words[-1]):
        return True
    if text.rstrip().endswith("?"):
        return False
    endings = [" ".join(words[-size:]) for size in range(1, min(_LONGEST, len(words)) + 1)]
    return not any(e in PHRASAL for e in endings) and any(e in DANGLING for e in endings)
