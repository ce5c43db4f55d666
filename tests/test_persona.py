"""What the receptionist tells a model about itself and the business, and the words it must hear right."""

from __future__ import annotations

from datetime import datetime

from services.receptionist.persona import keyterms, system_prompt
from services.receptionist.profile import parse_profile
from tests.factories import dental_profile, example_profile

PROFILE = dental_profile()


# --- the system prompt -----------------------------------------------------------------------------------
def test_the_system_prompt_knows_the_business_and_speaks_like_a_receptionist():
    prompt = system_prompt(PROFILE)
    for fact in ("Bright Smile Dental", "12 Main Street", "Monday 9 am to 5 pm", "Friday 9 am to 3 pm",
                 "Cleaning (45 minutes, price $120): Routine cleaning.", "Whitening (60 minutes, price $300)",
                 "parking: Free parking behind the building.", "America/New_York"):
        assert fact in prompt
    now = PROFILE.now()
    assert f"{now:%A}, {now:%B} {now.day}, {now.year}" in prompt
    assert "short" in prompt and "markdown" in prompt and "never invent availability" in prompt
    assert prompt.rstrip().endswith(f"({PROFILE.timezone}).")   # the clock last: a cacheable prefix


def test_the_system_prompt_names_the_holidays_and_special_hours_of_the_next_two_weeks():
    profile = example_profile()
    lines = system_prompt(profile, now=datetime(2026, 12, 20, 10, 0, tzinfo=profile.tz)).splitlines()

    hours = next(i for i, line in enumerate(lines) if line.startswith("Opening hours:"))
    exceptions = lines[hours + 1]                         # right after the weekly hours
    assert exceptions.startswith("Exceptions to the usual hours:")
    assert "Thursday, December 24: open 9 am to 12 pm only" in exceptions
    assert "Friday, December 25: closed" in exceptions
    assert "Friday, January 1: closed" in exceptions    # twelve days ahead: inside the two weeks
    assert "Right now it is Sunday, December 20, 2026, 10:00 am" in lines[-1]


def test_the_system_prompt_has_no_exceptions_line_when_none_are_near():
    profile = example_profile()
    prompt = system_prompt(profile, now=datetime(2026, 6, 1, 9, 0, tzinfo=profile.tz))
    assert "Exceptions" not in prompt


def test_the_clock_in_the_prompt_is_the_business_time_zone(monkeypatch):
    fixed = datetime(2026, 3, 6, 14, 5, tzinfo=PROFILE.tz)
    monkeypatch.setattr(type(PROFILE), "now", lambda self: fixed)
    assert "Right now it is Friday, March 6, 2026, 2:05 pm" in system_prompt(PROFILE)


# --- the recognizer's keyterms ---------------------------------------------------------------------------
def test_keyterms_are_the_business_name_and_its_services_without_repeats():
    profile = parse_profile({"name": "Cleaning", "services": [
        {"name": "Cleaning", "duration_min": 30}, {"name": "X-ray", "duration_min": 15}]})
    assert keyterms(profile) == ["Cleaning", "X-ray"]
