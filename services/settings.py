"""One typed settings object, read once from the environment and `.env`, then passed down."""

from __future__ import annotations

import json
from typing import Literal
from urllib.parse import urlsplit

from pydantic import NonNegativeInt, PositiveFloat, PositiveInt, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ProviderName = Literal["", "mock", "deepgram", "openai"]
# The openai SDK names gpt-realtime-2.1-mini as the Speech API's replacement (resources/audio/speech.py).
OPENAI_VOICE_MODELS = {"realtime": "gpt-realtime-2.1-mini", "speech": "gpt-4o-mini-tts"}
SPEECH_API_SHUTDOWN = "2027-01-06"
# The voices the Realtime API speaks with (the SDK's RealtimeAudioConfigOutput.voice)
REALTIME_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")


class ConfigError(RuntimeError):
    """A setting is missing or contradicts another; the message names the setting."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # --- server -----------------------------------------------------------------
    host: str = "0.0.0.0"
    port: int = 8000
    public_url: str = ""                 # empty = http://localhost:<PORT>
    log_level: str = "INFO"
    stream_token_secret: str = ""
    # limits on slow, idle and stuck peers (docs/security.md, "Limits and their settings")
    send_timeout_s: PositiveFloat = 5.0         # a send to Twilio waiting longer: socket dropped, call ended
    start_timeout_s: PositiveFloat = 10.0       # a media stream without its `start` event by then is closed
    http_header_timeout_s: PositiveFloat = 10.0  # a request head (from connect) not complete by then: dropped
    http_body_timeout_s: PositiveFloat = 10.0   # a request body not complete this long after its head: dropped
    http_keep_alive_s: PositiveFloat = 5.0      # an idle kept-alive connection is closed after this
    max_connections: PositiveInt = 1000         # open connections beyond this get 503 (requests and upgrades)

    # --- Twilio -----------------------------------------------------------------
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    twilio_validate_signatures: bool = True
    twilio_sms_from: str = ""
    twilio_api_base_url: str = ""        # REST API base; only for a proxy or a test fake
    twilio_rest_timeout_s: float = 5.0   # bound on every REST request (hang-up, transfer, SMS)
    transfer_ring_s: int = 25            # how long a transfer rings the owner before coming back
    webhook_max_body_bytes: int = 32768  # Twilio's forms are a few KB; larger bodies get 413 unread
    sms_confirmations: bool = False      # text callers a confirmation after booking changes

    # --- providers ----------------------------------------------------------------
    use_mock_streaming: bool = False
    asr_provider: ProviderName = ""
    llm_provider: ProviderName = ""
    tts_provider: ProviderName = ""
    deepgram_api_key: str = ""
    openai_api_key: str = ""

    deepgram_base_url: str = ""          # self-hosted or regional Deepgram (ws/wss base)
    deepgram_model: str = "nova-3"       # flux-general-en: Flux (listen v2) and its own turn detection
    deepgram_endpointing_ms: int = 300
    deepgram_utterance_end_ms: int = 1000
    deepgram_tts_model: str = "aura-2-thalia-en"
    deepgram_tts_streaming: bool = True  # Aura over one speak WebSocket per call; false: one REST request per sentence
    flux_eot_threshold: float = 0.7      # Flux: end-of-turn confidence for EndOfTurn (0.5-1.0)
    flux_eager_eot_threshold: float = 0.5   # Flux: for EagerEndOfTurn, a speculative reply (0.3-0.9; 0 = off)
    flux_eot_timeout_ms: int = 5000      # Flux: silence that ends a turn whatever the confidence (500-60000)
    openai_base_url: str = ""            # any OpenAI-compatible server
    openai_model: str = "gpt-5.4-mini"
    openai_api: Literal["responses", "chat"] = "responses"   # chat = Chat Completions (compatible servers)
    openai_reasoning_effort: str = "low"
    llm_first_token_timeout_s: float = 4.0
    llm_timeout_s: float = 15.0
    # OpenAI's voice: the Realtime API (one session per call), or the Speech API, whose models shut down
    # on 2027-01-06 (only when asked for, with a warning at start-up)
    openai_tts_api: Literal["realtime", "speech"] = "realtime"
    openai_tts_model: str = ""           # empty: gpt-realtime-2.1-mini (realtime), gpt-4o-mini-tts (speech)
    openai_tts_voice: str = "marin"
    tts_fallback_provider: ProviderName = ""   # speaks a sentence the main TTS failed; empty = the other keyed one
    # The longest the caller waits in silence on a voice (before a sentence's first audio, or between
    # its chunks) before the call switches to the other voice (or the pre-rendered lines)
    tts_max_gap_ms: PositiveInt = 1500
    # the fixed lines' audio, kept across restarts; empty = phrases/ by the SQLite file, else data/phrases
    phrase_cache_dir: str = ""

    # --- the business -------------------------------------------------------------
    business_profile: str = "business.example.toml"

    # --- conversation ---------------------------------------------------------------
    vad: Literal["neural", "energy"] = "neural"   # local speech start/end: Silero VAD, or an RMS threshold
    vad_speech_threshold: float = 0.5    # neural: speech probability at which a frame counts as voiced
    vad_silence_threshold: float = 0.35  # neural: while speaking, below this a frame counts as silent
    vad_min_rms: int = 400               # neural: a quieter frame is silence (Zylin's echo), and costs no inference
    vad_threshold_rms: int = 500         # energy: frame RMS (PCM16) at which a frame counts as voiced
    vad_start_ms: int = 0                # voiced this long in a row: speech start; 0 = 60 ms neural, 100 ms energy
    vad_end_silence_ms: int = 300        # silent this long in a row: speech end (the recognizer finalizes)
    # Caller speech over Zylin stops it after this much (from its first voiced frame), unless its words
    # are backchannels ("mm-hm"); "wait", "sorry" stop it at once. 250 ms stops 90 % of real
    # interruptions within 400 ms of their onset with VAD=neural, batched (docs/benchmarks.md §7).
    interrupt_min_speech_ms: PositiveInt = 250
    # A turn whose words end unfinished ("I'd like to book, um", "... on the") closes only after this
    # much more silence; if the caller goes on meanwhile it is one turn. 0 = off. Counts in asr_ms.
    turn_hold_unfinished_ms: NonNegativeInt = 800
    idle_timeout_s: float = 10.0
    max_call_s: float = 900.0
    max_tool_rounds: int = 5
    latency_target_ms: float = 1200.0
    max_ws_message_bytes: int = 16384
    soxr_quality: Literal["QQ", "LQ", "MQ", "HQ", "VHQ"] = "HQ"

    # --- mock providers (offline) -------------------------------------------------------
    mock_asr_script: str = ""           # JSON list, or lines separated by |
    mock_asr_delay_ms: float = 0.0
    mock_asr_endpointing_ms: int = 300
    mock_llm_delay_ms: float = 0.0
    mock_tts_delay_ms: float = 0.0
    mock_tts_chars_per_s: float = 15.0

    # --- storage and the call log ------------------------------------------------------
    database_url: str = "sqlite+aiosqlite:///data/zylin.db"
    admin_token: str = ""               # call-log pages and API; empty = loopback clients only
    call_sweep_grace_s: float = 120.0   # open calls older than MAX_CALL_S + 60 s + this are swept
    # while the database is away (docs/call-log.md "When the database is away")
    write_journal_dir: str = ""         # writes kept on disk; empty = journal/ by the SQLite file, else data/journal
    write_memory_max: int = 10000       # writes waiting in memory; the rest wait in the journal
    write_spill_after_s: float = 2.0    # a write not stored by then waits in the journal (a crash keeps it)
    webhook_write_timeout_s: float = 0.3  # the voice webhook waits this long for its write, then answers
    tool_timeout_s: float = 4.0         # a tool on the database answers within this, or honestly fails
    tool_one_moment_s: float = 1.5      # the caller hears "One moment, please." once a tool takes this long

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if not value:
            return value
        if urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc:
            raise ValueError("PUBLIC_URL must be a full URL like https://abc.ngrok.app")
        return value.rstrip("/")

    @field_validator("mock_asr_script")
    @classmethod
    def _script_is_readable(cls, value: str) -> str:
        if value.lstrip().startswith("["):
            lines = json.loads(value)
            if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
                raise ValueError("MOCK_ASR_SCRIPT must be a JSON list of strings or lines separated by |")
        return value

    @model_validator(mode="after")
    def _public_url_default(self) -> Settings:
        """Unset, PUBLIC_URL is this server on the port it actually listens on."""
        if not self.public_url:
            self.public_url = f"http://localhost:{self.port}"
        return self

    # --- derived ----------------------------------------------------------------------
    @property
    def mock_script_lines(self) -> list[str]:
        """`MOCK_ASR_SCRIPT=hello|bye` is friendlier in a shell than JSON; both work."""
        if self.mock_asr_script.lstrip().startswith("["):
            return json.loads(self.mock_asr_script)
        return [line.strip() for line in self.mock_asr_script.split("|") if line.strip()]

    @property
    def public_host(self) -> str:
        return urlsplit(self.public_url).netloc

    @property
    def voice_webhook_url(self) -> str:
        return f"{self.public_url}/api/twilio/voice"

    @property
    def media_stream_url(self) -> str:
        """The `wss://` URL named in the TwiML; Twilio signs the upgrade over exactly this."""
        return f"wss://{self.public_host}{urlsplit(self.public_url).path}/media-stream"

    @property
    def signatures_enforced(self) -> bool:
        return bool(self.twilio_auth_token) and self.twilio_validate_signatures

    @property
    def token_secret(self) -> str:
        """Key for the per-call stream token: its own secret, else the Twilio auth token."""
        return self.stream_token_secret or self.twilio_auth_token or "zylin-dev-secret"

    def provider(self, kind: Literal["asr", "llm", "tts"]) -> str:
        """The provider chosen for `kind`: explicit setting, else real when its key is set."""
        if self.use_mock_streaming:
            return "mock"
        chosen = getattr(self, f"{kind}_provider")
        if chosen:
            return chosen
        if kind == "asr":
            return "deepgram" if self.deepgram_api_key else "mock"
        if kind == "llm":
            return "openai" if self.openai_api_key else "mock"
        # OpenAI's Speech API models shut down on 2027-01-06: Aura first when both keys are set.
        if self.deepgram_api_key:
            return "deepgram"
        return "openai" if self.openai_api_key else "mock"

    @property
    def openai_voice_model(self) -> str:
        """OPENAI_TTS_MODEL, else the default of OPENAI_TTS_API."""
        return self.openai_tts_model or OPENAI_VOICE_MODELS[self.openai_tts_api]

    @property
    def uses_flux(self) -> bool:
        """DEEPGRAM_MODEL names a Flux model: the v2 recognizer, with its own turn detection."""
        return self.deepgram_model.startswith("flux")

    def _check_flux(self) -> None:
        """Deepgram refuses the whole stream (HTTP 400 at the upgrade) for a value out of its
        documented range or an eager threshold above the final one: say so at start-up instead."""
        low, high = 0.5, 1.0
        if not low <= self.flux_eot_threshold <= high:
            raise ConfigError(f"FLUX_EOT_THRESHOLD must be within {low}-{high}")
        eager = self.flux_eager_eot_threshold
        if eager and not 0.3 <= eager <= 0.9:
            raise ConfigError("FLUX_EAGER_EOT_THRESHOLD must be 0 (off) or within 0.3-0.9")
        if eager > self.flux_eot_threshold:
            raise ConfigError("FLUX_EAGER_EOT_THRESHOLD must not be above FLUX_EOT_THRESHOLD")
        if not 500 <= self.flux_eot_timeout_ms <= 60000:
            raise ConfigError("FLUX_EOT_TIMEOUT_MS must be within 500-60000")

    def _check_openai_voice(self) -> list[str]:
        if self.openai_tts_api == "realtime" and self.openai_tts_voice not in REALTIME_VOICES:
            raise ConfigError(f"OPENAI_TTS_VOICE={self.openai_tts_voice} is not a Realtime API voice; "
                              f"choose one of {', '.join(REALTIME_VOICES)}")
        if self.openai_tts_api == "speech":
            return [f"OPENAI_TTS_API=speech: OpenAI's Speech API models shut down on {SPEECH_API_SHUTDOWN}; "
                    "use OPENAI_TTS_API=realtime (the default)"]
        return []

    @property
    def all_mock(self) -> bool:
        return all(self.provider(k) == "mock" for k in ("asr", "llm", "tts"))

    def check(self) -> list[str]:
        """Raise ConfigError for a selected provider without its key; return warnings."""
        needs = {"deepgram": "DEEPGRAM_API_KEY", "openai": "OPENAI_API_KEY"}
        for kind in ("asr", "llm", "tts"):
            name = self.provider(kind)
            allowed = {"asr": {"mock", "deepgram"}, "llm": {"mock", "openai"},
                       "tts": {"mock", "openai", "deepgram"}}[kind]
            if name not in allowed:
                raise ConfigError(f"{kind.upper()}_PROVIDER={name} is not one of {sorted(allowed)}")
            key = needs.get(name)
            if key and not getattr(self, key.lower()):
                raise ConfigError(f"{kind.upper()}_PROVIDER={name} needs {key}; set it or choose 'mock'")
        if self.provider("asr") == "deepgram" and self.uses_flux:
            self._check_flux()
        warnings = []
        if self.openai_api_key and not self.use_mock_streaming:  # OpenAI's voice, the main one or the fallback
            warnings += self._check_openai_voice()
        if self.twilio_auth_token and not self.twilio_validate_signatures:
            warnings.append("TWILIO_VALIDATE_SIGNATURES=false: Twilio signatures are NOT checked")
        elif not self.twilio_auth_token:
            warnings.append("TWILIO_AUTH_TOKEN is not set: Twilio signatures are not checked")
        if not self.stream_token_secret and not self.twilio_auth_token:
            warnings.append("STREAM_TOKEN_SECRET is not set: using a development secret for stream tokens")
        return warnings

    # --- legacy record mode (/api/twilio/voice-legacy, docs/legacy.md) ------------------------
    legacy_transcriber: ProviderName = ""       # mock | openai | deepgram; empty = by the keys set
    openai_transcribe_model: str = "gpt-transcribe"   # gpt-4o-mini-transcribe shuts down 2027-02-26
    legacy_say_voice: str = "Polly.Joanna-Neural"
    legacy_record_timeout_s: int = 2            # silence that ends the caller's recording
    legacy_max_record_s: int = 30               # longest single recording
    legacy_response_budget_s: float = 10.0      # TwiML answered within this (Twilio waits 15 s)

    @property
    def legacy_transcriber_name(self) -> str:
        """The recording transcriber: explicit setting, else OpenAI, then Deepgram, by their keys."""
        if self.use_mock_streaming:
            return "mock"
        if self.legacy_transcriber:
            return self.legacy_transcriber
        if self.openai_api_key:
            return "openai"
        return "deepgram" if self.deepgram_api_key else "mock"
