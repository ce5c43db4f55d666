"""Chooses and builds the providers the settings select; one place that knows them all."""

from __future__ import annotations

from collections.abc import Mapping

from services.asr.base import SpeechRecognizer
from services.llm.base import Brain
from services.receptionist.profile import BusinessProfile
from services.settings import Settings
from services.tts.base import SpeechSynthesizer


def build_recognizer(settings: Settings, profile: BusinessProfile,
                     call_params: Mapping[str, str]) -> SpeechRecognizer:
    """One recognizer per call; the mock takes its words from the call's `mockScript`."""
    name = settings.provider("asr")
    if name == "deepgram":
        from services.asr.deepgram import DeepgramRecognizer
        return DeepgramRecognizer(settings, profile, call_sid=call_params.get("callSid", ""))
    from services.asr.mock import MockRecognizer, script_for_call
    return MockRecognizer(
        script=script_for_call(call_params, settings.mock_script_lines),
        endpointing_ms=settings.mock_asr_endpointing_ms,
        delay_ms=settings.mock_asr_delay_ms,
        threshold_rms=settings.vad_threshold_rms,
    )


def build_brain(settings: Settings, profile: BusinessProfile) -> Brain:
    """One brain per call (it may hold an HTTP client)."""
    if settings.provider("llm") == "openai":
        from services.llm.openai_brain import OpenAIBrain
        return OpenAIBrain(settings, profile)
    from services.llm.mock import MockBrain
    return MockBrain(profile, delay_ms=settings.mock_llm_delay_ms)


def build_synthesizer(settings: Settings) -> SpeechSynthesizer:
    """One synthesizer per process: it is stateless per request and shares its HTTP pool."""
    name = settings.provider("tts")
    if name == "openai":
        from services.tts.openai_tts import OpenAISynthesizer
        return OpenAISynthesizer(settings)
    if name == "deepgram":
        from services.tts.deepgram_aura import AuraSynthesizer
        return AuraSynthesizer(settings)
    from services.tts.mock import MockSynthesizer
    return MockSynthesizer(chars_per_s=settings.mock_tts_chars_per_s, delay_ms=settings.mock_tts_delay_ms)
