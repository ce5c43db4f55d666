"""Builders for what the tests hand Zylin: settings, business profiles, and the days and numbers a
call uses. One version of each, so a test module says only how its case differs.

Plain functions; the fixtures built on them live in conftest.py.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from services.receptionist.profile import BusinessProfile, load_profile, parse_profile
from services.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_PROFILE = ROOT / "business.example.toml"   # what `python main.py` serves out of the box
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC_URL = "https://zylin.example.test"
PROVIDER_KEY = "test-key"                          # the Deepgram and OpenAI key the tests give the fakes
NEW_YORK = ZoneInfo("America/New_York")            # the example business's time zone

# The numbers on a call and the owner's, as the example business would be set up.
CALLER = "+15550107777"
OWNER_PHONE = "+15550001111"
OWNER_SMS = "+15550002222"
SMS_FROM = "+15550009999"


# --- settings ---------------------------------------------------------------------------------------
def plain_settings(**values: Any) -> Settings:
    """Settings from `values` and the defaults, never from a .env file on the machine."""
    return Settings(_env_file=None, **values)


def make_settings(**overrides: Any) -> Settings:
    """The settings a test server runs with: the example business, mock streaming, Twilio signing
    with AUTH_TOKEN over PUBLIC_URL; `overrides` change any of them."""
    values: dict[str, Any] = dict(
        public_url=PUBLIC_URL, twilio_auth_token=AUTH_TOKEN, use_mock_streaming=True,
        business_profile=str(EXAMPLE_PROFILE), idle_timeout_s=30.0, log_level="INFO",
        # The simulated caller (services/simulator/voice.py) is a harmonic buzz shaped for an energy
        # detector, not speech: the neural VAD is tested on espeak-ng speech (tests/test_silero_vad.py).
        vad="energy",
    )
    values.update(overrides)
    return plain_settings(**values)


# --- business profiles ------------------------------------------------------------------------------
def example_profile() -> BusinessProfile:
    """The shipped example business (business.example.toml)."""
    return load_profile(EXAMPLE_PROFILE)


DENTAL: dict[str, Any] = {
    "name": "Bright Smile Dental", "timezone": "America/New_York", "address": "12 Main Street",
    "hours": {"mon": "09:00-17:00", "fri": "09:00-15:00"},
    "services": [{"name": "Cleaning", "duration_min": 45, "price": "$120", "description": "Routine cleaning."},
                 {"name": "Whitening", "duration_min": 60, "price": "$300"}],
    "faq": {"parking": "Free parking behind the building."},
}


def dental_profile(**fields: Any) -> BusinessProfile:
    """A small practice, smaller than the example: open Monday and Friday, two services, one FAQ.
    `fields` replace its top-level entries (other services, hours, answers) where a test needs them."""
    return parse_profile({**DENTAL, **fields})


def profile_with_an_owner(folder: Path, *, owner_sms: str = OWNER_SMS) -> Path:
    """The example business with an owner to call (OWNER_PHONE) and to text (`owner_sms`; "" for
    none), reachable all week (its holidays left out: transfers follow them, and these tests run on
    any day of the year). Written to `folder`; its path, for BUSINESS_PROFILE."""
    text = (EXAMPLE_PROFILE.read_text()
            .replace('owner_phone = ""', f'owner_phone = "{OWNER_PHONE}"')
            .replace('owner_sms = ""', f'owner_sms = "{owner_sms}"'))
    all_week = "\n".join(f'{d} = "00:00-23:59"' for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun"))
    head, rest = text.split("[transfer_hours]")
    text = head + "[transfer_hours]\n" + all_week + "\n\n[booking]" + rest.split("[booking]", 1)[1]
    path = folder / "owner-all-week.toml"
    path.write_text(text)
    profile = load_profile(path)
    assert profile.transfer_hours["sun"].closes.hour == 23 and not profile.exceptions
    return path


# --- the days a call talks about --------------------------------------------------------------------
def open_weekday(after: date | None = None, days_ahead: int = 3) -> date:
    """An ordinary open weekday of the example business at least `days_ahead` after `after`
    (default: today in New York): servers run on the real clock, so tests book days from today."""
    profile = example_profile()
    day = (after or datetime.now(NEW_YORK).date()) + timedelta(days=days_ahead)
    while day.weekday() >= 5 or day in profile.exceptions or profile.open_span(day) is None:
        day += timedelta(days=1)
    return day


def said(day: date) -> str:
    """How a caller names the day: "November 30"."""
    return f"{day:%B} {day.day}"


def local(day: date, hour: int, minute: int = 0) -> datetime:
    """That day at that time in New York."""
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=NEW_YORK)
