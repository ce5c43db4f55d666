"""Chooses and builds the providers the settings select; one place that knows them all.

Providers take plain arguments, never Settings or the BusinessProfile: this module maps the
settings, and what the recognizer needs of the profile (its keyterms), to those arguments. The
`*_arguments` functions are that mapping for the real providers, shared with the tests that build
one with their own retry timings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from services.asr.base import SpeechRecognizer
from services.audio.vad import ENERGY_START_MS, FRAME_MS, NEURAL_START_MS, EnergyVad, Vad
from services.llm.base import Brain
from services.receptionist import lines
from services.receptionist.persona import keyterms
from services.receptionist.profile import BusinessProfile
from services.settings import ConfigError, Settings
from services.tts.base import SpeechSynthesizer

log = logging.getLogger("zylin.providers")

FALLBACK_KEYS = {"deepgram": "DEEPGRAM_API_KEY", "openai": "OPENAI_API_KEY"}


def build_recognizer(settings: Settings, profile: BusinessProfile,
                     call_params: Mapping[str, str]) -> SpeechRecognizer:
    """One recognizer per call; the mock takes its words from the call's `mockScript`."""
    name = settings.provider("asr")
    if name == "deepgram" and settings.uses_flux:
        from services.asr.deepgram_flux import FluxRecognizer
        return FluxRecognizer(**flux_arguments(settings, profile), call_sid=call_params.get("callSid", ""))
    if name == "deepgram":
        from services.asr.deepgram import DeepgramRecognizer
        return DeepgramRecognizer(**deepgram_arguments(settings, profile), call_sid=call_params.get("callSid", ""))
    from services.asr.mock import MockRecognizer, script_for_call
    return MockRecognizer(
        script=script_for_call(call_params, settings.mock_script_lines),
        endpointing_ms=settings.mock_asr_endpointing_ms,
        delay_ms=settings.mock_asr_delay_ms,
        threshold_rms=settings.vad_threshold_rms,
        demo_notice=lines.DEMO_NOTICE, demo_reminder=lines.DEMO_REMINDER,
    )


def deepgram_arguments(settings: Settings, profile: BusinessProfile) -> dict[str, Any]:
    """DeepgramRecognizer's arguments: the DEEPGRAM_* settings and the profile's keyterms."""
    return dict(api_key=settings.deepgram_api_key, base_url=settings.deepgram_base_url,
                model=settings.deepgram_model, endpointing_ms=settings.deepgram_endpointing_ms,
                utterance_end_ms=settings.deepgram_utterance_end_ms, keyterms=keyterms(profile))


def flux_arguments(settings: Settings, profile: BusinessProfile) -> dict[str, Any]:
    """FluxRecognizer's arguments: DEEPGRAM_MODEL, the FLUX_* settings and the profile's keyterms."""
    return dict(api_key=settings.deepgram_api_key, base_url=settings.deepgram_base_url,
                model=settings.deepgram_model, eot_threshold=settings.flux_eot_threshold,
                eager_eot_threshold=settings.flux_eager_eot_threshold,
                eot_timeout_ms=settings.flux_eot_timeout_ms, keyterms=keyterms(profile))


def build_brain(settings: Settings, profile: BusinessProfile) -> Brain:
    """One brain per call (it may hold an HTTP client). Without OpenAI (LLM_PROVIDER=mock, or no
    key) the offline receptionist answers from the profile."""
    if settings.provider("llm") == "openai":
        from services.llm.openai_brain import OpenAIBrain
        return OpenAIBrain(**openai_brain_arguments(settings))
    from services.receptionist.offline.brain import OfflineBrain
    return OfflineBrain(profile, delay_ms=settings.mock_llm_delay_ms)


def openai_brain_arguments(settings: Settings) -> dict[str, Any]:
    """OpenAIBrain's arguments: the OPENAI_* and LLM_* settings."""
    return dict(api_key=settings.openai_api_key, base_url=settings.openai_base_url, model=settings.openai_model,
                api=settings.openai_api, effort=settings.openai_reasoning_effort,
                first_token_timeout_s=settings.llm_first_token_timeout_s, timeout_s=settings.llm_timeout_s)


def build_synthesizer(settings: Settings) -> SpeechSynthesizer:
    """One voice per process; a call speaks through its `for_call()` (a streaming voice: a
    connection per call, Aura's speak socket or an OpenAI Realtime session)."""
    return _synthesizer(settings.provider("tts"), settings)


def fallback_tts_provider(settings: Settings) -> str | None:
    """The voice that says a sentence the main one failed: TTS_FALLBACK_PROVIDER, else the other
    real voice whose key is set. Never the main voice itself; the mock only when named (tests,
    offline), since on a real call a mock voice is a tone, not words."""
    main = settings.provider("tts")
    if settings.use_mock_streaming:
        return None
    chosen = settings.tts_fallback_provider
    if not chosen:
        if main == "mock":
            return None  # the mock does not fail
        keyed = [name for name, key in FALLBACK_KEYS.items() if getattr(settings, key.lower())]
        return next((name for name in keyed if name != main), None)
    if chosen == main:
        log.warning("TTS_FALLBACK_PROVIDER=%s is the main voice itself: no fallback voice", chosen)
        return None
    key = FALLBACK_KEYS.get(chosen)
    if key and not getattr(settings, key.lower()):
        raise ConfigError(f"TTS_FALLBACK_PROVIDER={chosen} needs {key}; set it or leave "
                          "TTS_FALLBACK_PROVIDER empty")
    return chosen


def build_fallback_synthesizer(settings: Settings) -> SpeechSynthesizer | None:
    """The fallback voice, one per process like the main one; None when there is none. With no
    other voice, Aura streaming falls back on Aura by REST: the same voice, without the socket."""
    name = fallback_tts_provider(settings)
    if name is None and settings.provider("tts") == "deepgram" and settings.deepgram_tts_streaming \
            and not settings.tts_fallback_provider and not settings.use_mock_streaming:
        from services.tts.deepgram_aura import AuraSynthesizer
        return AuraSynthesizer(settings, streaming=False)
    return None if name is None else _synthesizer(name, settings)


def _synthesizer(name: str, settings: Settings) -> SpeechSynthesizer:
    """Built with no event loop running: `python main.py` builds the app before uvicorn's loop."""
    if name == "openai" and settings.openai_tts_api == "realtime":
        from services.tts.openai_realtime import RealtimeVoice
        return RealtimeVoice(settings)
    if name == "openai":  # the Speech API: only when asked for (it shuts down on 2027-01-06)
        from services.tts.openai_tts import OpenAISynthesizer
        return OpenAISynthesizer(settings)
    if name == "deepgram":
        from services.tts.deepgram_aura import AuraSynthesizer
        return AuraSynthesizer(settings)
    from services.tts.mock import MockSynthesizer
    return MockSynthesizer(chars_per_s=settings.mock_tts_chars_per_s, delay_ms=settings.mock_tts_delay_ms)


def build_vad(settings: Settings) -> Vad:
    """The detector VAD names, with its settings (a new one per call: the state is the call's)."""
    energy = settings.vad == "energy"
    start_ms = settings.vad_start_ms or (ENERGY_START_MS if energy else NEURAL_START_MS)
    start = max(1, start_ms // FRAME_MS)
    end = max(1, settings.vad_end_silence_ms // FRAME_MS)
    if energy:
        return EnergyVad(settings.vad_threshold_rms, start_frames=start, end_silence_frames=end)
    # not imported by energy-only deployments
    from services.audio.silero_vad import SileroVad, shared_batch, shared_model

    try:  # a call's detector, made in the event loop, runs its windows with every other call's
        asyncio.get_running_loop()
        batch = shared_batch()
    except RuntimeError:  # offline scoring: each window at once, `score` current after every frame
        batch = None
    return SileroVad(shared_model(), threshold=settings.vad_speech_threshold,
                     neg_threshold=settings.vad_silence_threshold, start_frames=start, end_silence_frames=end,
                     min_rms=settings.vad_min_rms, batch=batch)
