"""The phrase cache: a fixed line is rendered once per voice, kept in memory and on disk, and
found again by a restarted server without asking the voice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.orchestrator.phrases import PhraseCache, render
from services.receptionist.lines import LET_ME_CHECK, ONE_MOMENT
from services.tts.mock import MockSynthesizer


class Counting(MockSynthesizer):
    """The mock voice, counting what it is asked; `fail` makes it raise instead."""

    def __init__(self, sample_rate: int = 24000) -> None:
        super().__init__(sample_rate=sample_rate)
        self.asked: list[str] = []
        self.fail = False
        self.gate: asyncio.Event | None = None

    async def synthesize(self, text: str):
        self.asked.append(text)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("the voice is down")
        async for chunk in super().synthesize(text):
            yield chunk


async def test_a_phrase_is_rendered_once_and_then_ready_in_memory():
    voice, cache = Counting(), PhraseCache()
    assert cache.audio(voice, LET_ME_CHECK) is None
    audio = await cache.get(voice, LET_ME_CHECK)

    assert audio == await render(voice, LET_ME_CHECK) and audio
    assert cache.audio(voice, LET_ME_CHECK) == audio
    assert await cache.get(voice, LET_ME_CHECK) == audio
    assert voice.asked == [LET_ME_CHECK, LET_ME_CHECK]   # once for the cache, once for the comparison


async def test_a_restarted_server_reads_its_phrases_from_disk_without_asking_the_voice(tmp_path: Path):
    voice = Counting()
    first = await PhraseCache(folder=tmp_path).get(voice, LET_ME_CHECK)
    [stored] = list(tmp_path.glob("*.ulaw"))
    assert stored.read_bytes() == first and not list(tmp_path.glob("*.part"))

    again = Counting()
    restarted = PhraseCache(folder=tmp_path)
    assert await restarted.warm(again, [LET_ME_CHECK]) == 1
    assert again.asked == [] and restarted.audio(again, LET_ME_CHECK) == first


async def test_a_phrase_belongs_to_its_voice_and_its_exact_text(tmp_path: Path):
    cache = PhraseCache(folder=tmp_path)
    narrow, wide = Counting(sample_rate=8000), Counting(sample_rate=24000)   # two voices: two cache keys
    await cache.get(narrow, LET_ME_CHECK)
    assert cache.audio(wide, LET_ME_CHECK) is None and cache.audio(narrow, LET_ME_CHECK + " ") is None
    await cache.get(wide, LET_ME_CHECK)
    assert len(list(tmp_path.glob("*.ulaw"))) == 2


async def test_callers_asking_at_once_share_one_rendering():
    voice, cache = Counting(), PhraseCache()
    voice.gate = asyncio.Event()
    waiting = [asyncio.ensure_future(cache.get(voice, ONE_MOMENT)) for _ in range(5)]
    await asyncio.sleep(0)
    voice.gate.set()
    results = await asyncio.gather(*waiting)

    assert voice.asked == [ONE_MOMENT] and len(set(results)) == 1


async def test_a_failed_rendering_is_not_kept_and_warm_reports_it_once(caplog):
    voice, cache = Counting(), PhraseCache()
    voice.fail = True
    assert await cache.warm(voice, [LET_ME_CHECK, ONE_MOMENT]) == 0
    assert caplog.text.count("could not pre-render 2 of 2 phrases") == 1
    with pytest.raises(ConnectionError):
        await cache.get(voice, LET_ME_CHECK)

    voice.fail = False                      # the voice is back: the next call renders it
    assert await cache.get(voice, LET_ME_CHECK)


async def test_an_empty_file_is_rendered_again_and_a_disk_that_refuses_costs_only_the_rendering(tmp_path: Path):
    voice = Counting()
    await PhraseCache(folder=tmp_path).get(voice, LET_ME_CHECK)
    [stored] = list(tmp_path.glob("*.ulaw"))
    stored.write_bytes(b"")                 # a file left empty (a full disk, a crash elsewhere)
    assert await PhraseCache(folder=tmp_path).get(voice, LET_ME_CHECK) and len(voice.asked) == 2

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the folder would be")
    assert await PhraseCache(folder=blocked).get(voice, ONE_MOMENT)   # kept in memory, logged
