"""Splits the brain's streamed text into speakable pieces, so TTS starts on the first sentence
while the brain is still writing the rest."""

from __future__ import annotations

import re

_ABBREVIATION = re.compile(r"(?:^|\s)(?:mr|mrs|ms|dr|st|e\.g|i\.e|vs|a\.m|p\.m)\.$", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*\s")
_CLAUSE_END = re.compile(r"[,;:—]\s")


class SentenceChunker:
    def __init__(self, min_chars: int = 4, clause_after_chars: int = 80) -> None:
        self.min_chars = min_chars
        self.clause_after_chars = clause_after_chars
        self._buf = ""

    def push(self, delta: str) -> list[str]:
        self._buf += delta
        out: list[str] = []
        while True:
            piece = self._cut()
            if piece is None:
                return out
            out.append(piece)

    def flush(self) -> str | None:
        rest, self._buf = self._buf.strip(), ""
        return rest or None

    def _cut(self) -> str | None:
        for match in _SENTENCE_END.finditer(self._buf):
            head = self._buf[: match.end()].strip()
            if len(head) < self.min_chars or _ABBREVIATION.search(head):
                continue
            self._buf = self._buf[match.end():]
            return head
        if len(self._buf) > self.clause_after_chars:  # a long sentence: speak up to a clause break
            matches = list(_CLAUSE_END.finditer(self._buf))
            if matches:
                end = matches[-1].end()
                head, self._buf = self._buf[:end].strip(), self._buf[end:]
                return head
        return None
