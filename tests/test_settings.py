"""Settings: which providers run, what is refused at start-up, and the URLs Twilio is given."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.settings import ConfigError, Settings
from tests.factories import plain_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets counts: no developer keys or .env leak in."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)


def providers(s: Settings) -> tuple[str, str, str]:
    return s.provider("asr"), s.provider("llm"), s.provider("tts")


# --- provider choice ---------------------------------------------------------------------------

def test_with_no_keys_every_provider_is_a_mock() -> None:
    s = plain_settings()
    assert providers(s) == ("mock", "mock", "mock")
    assert s.all_mock is True
    s.check()  # a fresh checkout starts


def test_an_openai_key_selects_openai_for_the_brain_and_the_voice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    s = plain_settings()
    assert providers(s) == ("mock", "openai", "openai")
    assert s.all_mock is False
    s.check()


def test_a_deepgram_key_selects_deepgram_for_listening(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPGRAM_API_KEY", "dg-test")
    assert providers(plain_settings()) == ("deepgram", "mock", "deepgram")


def test_with_both_keys_aura_speaks_because_openai_speech_shuts_down(monkeypatch: pytest.MonkeyPatch) -> None:
    # OpenAI's Speech API models shut down on 2027-01-06: the automatic voice is Deepgram Aura.
    monkeypatch.setenv("DEEPGRAM_API_KEY", "dg-test")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert providers(plain_settings()) == ("deepgram", "openai", "deepgram")


def test_an_openai_key_alone_still_gets_a_real_voice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert providers(plain_settings()) == ("mock", "openai", "openai")


def test_public_url_defaults_to_the_port_the_server_listens_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9123")
    s = plain_settings()
    assert s.public_url == "http://localhost:9123"
    assert s.voice_webhook_url == "http://localhost:9123/api/twilio/voice"


def test_no_default_model_is_one_announced_to_shut_down_within_90_days() -> None:
    s = plain_settings()
    # gpt-4o-mini-transcribe shuts down 2027-02-26; the Speech API models 2027-01-06 (not automatic
    # when a Deepgram key is set: see above).
    assert s.openai_transcribe_model == "gpt-transcribe"
    assert s.openai_api == "responses"


def test_use_mock_streaming_forces_mocks_whatever_keys_are_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPGRAM_API_KEY", "dg-test")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ASR_PROVIDER", "deepgram")
    monkeypatch.setenv("USE_MOCK_STREAMING", "true")
    s = plain_settings()
    assert providers(s) == ("mock", "mock", "mock")
    assert s.all_mock is True


def test_an_explicit_provider_wins_over_the_automatic_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("DEEPGRAM_API_KEY", "dg-test")
    monkeypatch.setenv("TTS_PROVIDER", "deepgram")
    monkeypatch.setenv("LLM_PROVIDER", "mock")
    assert providers(plain_settings()) == ("deepgram", "mock", "deepgram")


# --- refusing a broken configuration -----------------------------------------------------------

def test_deepgram_asr_without_its_key_is_refused_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASR_PROVIDER", "deepgram")
    with pytest.raises(ConfigError, match="DEEPGRAM_API_KEY"):
        plain_settings().check()


def test_openai_tts_without_its_key_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        plain_settings(tts_provider="openai").check()


def test_an_unknown_provider_name_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASR_PROVIDER", "whisper")
    with pytest.raises(ValidationError, match="asr_provider"):
        plain_settings()


def test_a_provider_that_cannot_do_the_job_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with pytest.raises(ConfigError, match="ASR_PROVIDER=openai"):
        plain_settings(asr_provider="openai").check()


# --- Twilio signatures ---------------------------------------------------------------------------

def test_switching_signatures_off_with_a_token_set_is_warned_about(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "tok")
    monkeypatch.setenv("TWILIO_VALIDATE_SIGNATURES", "false")
    s = plain_settings()
    assert s.signatures_enforced is False
    assert any("TWILIO_VALIDATE_SIGNATURES=false" in w for w in s.check())


def test_a_token_with_validation_on_gives_no_signature_warning() -> None:
    warnings = plain_settings(twilio_auth_token="tok").check()
    assert not any("signature" in w.lower() for w in warnings)


@pytest.mark.parametrize(("token", "validate", "enforced"), [
    ("tok", True, True),
    ("tok", False, False),
    ("", True, False),
    ("", False, False),
])
def test_signatures_are_enforced_only_with_a_token_and_validation_on(
        token: str, validate: bool, enforced: bool) -> None:
    s = plain_settings(twilio_auth_token=token, twilio_validate_signatures=validate)
    assert s.signatures_enforced is enforced


def test_without_an_auth_token_check_warns_that_signatures_are_not_checked() -> None:
    assert any("TWILIO_AUTH_TOKEN" in w for w in plain_settings().check())


# --- URLs ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("public_url", [
    "https://abc.ngrok.app",
    "https://abc.ngrok.app/",
    "http://abc.ngrok.app",
    "http://abc.ngrok.app//",
])
def test_media_stream_url_is_wss_on_the_public_host_without_a_query(
        monkeypatch: pytest.MonkeyPatch, public_url: str) -> None:
    monkeypatch.setenv("PUBLIC_URL", public_url)
    s = plain_settings()
    assert s.media_stream_url == "wss://abc.ngrok.app/media-stream"
    assert s.voice_webhook_url.endswith("abc.ngrok.app/api/twilio/voice")
    assert "//api" not in s.voice_webhook_url


def test_a_port_in_the_public_url_is_kept_for_the_stream() -> None:
    assert plain_settings(public_url="https://zylin.example.com:8443/").media_stream_url == \
        "wss://zylin.example.com:8443/media-stream"


# --- the mock recognizer's script ----------------------------------------------------------------

def test_mock_asr_script_accepts_a_json_list_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOCK_ASR_SCRIPT", '["I need a cleaning, please.", "Thursday | morning"]')
    assert plain_settings().mock_script_lines == ["I need a cleaning, please.", "Thursday | morning"]


def test_mock_asr_script_accepts_pipe_separated_lines_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOCK_ASR_SCRIPT", "hello, is this the dentist? | bye|  ")
    assert plain_settings().mock_script_lines == ["hello, is this the dentist?", "bye"]


def test_mock_asr_script_that_is_not_a_list_of_strings_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOCK_ASR_SCRIPT", '["hello", 3]')
    with pytest.raises(ValidationError, match="MOCK_ASR_SCRIPT"):
        plain_settings()
