"""The business profile the owner edits: what Zylin says about the business, and every mistake named."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from services.receptionist.profile import ProfileError, load_profile, parse_profile

EXAMPLE = Path(__file__).resolve().parent.parent / "business.example.toml"
NEW_YORK = ZoneInfo("America/New_York")


def valid() -> dict:
    return {
        "name": "Corner Barbers",
        "timezone": "Europe/London",
        "hours": {"mon": "09:00-17:30", "sat": "10:00-14:00"},
        "services": [{"name": "Haircut", "duration_min": 30, "price": "£20"},
                     {"name": "Beard trim", "duration_min": 15}],
        "owner_phone": "+442071234567",
    }


@pytest.fixture(scope="module")
def example():
    return load_profile(EXAMPLE)


# --- the example profile --------------------------------------------------------------------

def test_the_example_profile_loads(example) -> None:
    assert example.greeting.startswith("Thanks for calling Bright Smile Dental, this is Zylin.")
    assert example.timezone == "America/New_York"
    assert [s.name for s in example.services] == ["Cleaning", "Whitening", "Consultation"]
    assert example.services[0].duration_min == 45
    assert set(example.hours) == {"mon", "tue", "wed", "thu", "fri"}
    assert example.faq["parking"].startswith("There is free parking")
    assert example.owner_phone == ""


def test_hours_sentence_reads_each_open_day_and_names_the_closed_ones(example) -> None:
    sentence = example.hours_sentence()
    assert sentence.startswith("We're open Monday 9 am to 5 pm, ")
    assert "Thursday 9 am to 7 pm" in sentence
    assert "Friday 9 am to 3 pm." in sentence
    assert sentence.endswith("We're closed on Saturday and Sunday.")


def test_hours_sentence_speaks_minutes_and_afternoons() -> None:
    sentence = parse_profile(valid()).hours_sentence()
    assert "Monday 9 am to 5:30 pm" in sentence
    assert "Saturday 10 am to 2 pm" in sentence
    assert "Tuesday" in sentence.split("closed on")[1]
    assert "Saturday" not in sentence.split("closed on")[1]


def test_services_sentence_lists_every_service_with_its_price(example) -> None:
    assert example.services_sentence() == \
        "We offer Cleaning ($120), Whitening ($300) and Consultation (free)."
    assert parse_profile(valid()).services_sentence() == "We offer Haircut (£20) and Beard trim."


def test_find_service_finds_a_service_named_anywhere_in_what_the_caller_said(example) -> None:
    assert example.find_service("Hi, I'd like to book a CLEANING next week").name == "Cleaning"
    assert example.find_service("how much is whitening?").name == "Whitening"
    assert example.find_service("do you do root canals?") is None



def test_the_business_keeps_its_name_and_default_greeting() -> None:
    profile = parse_profile(valid())
    assert profile.name == "Corner Barbers"
    assert profile.greeting == "Thanks for calling Corner Barbers. How can I help you today?"


# --- transfer hours in the business's time zone ----------------------------------------------------

@pytest.mark.parametrize(("local", "open_"), [
    (datetime(2025, 1, 16, 10, 0), True),    # Thursday morning
    (datetime(2025, 1, 16, 9, 0), True),     # the minute it opens
    (datetime(2025, 1, 16, 8, 59), False),
    (datetime(2025, 1, 16, 17, 0), False),   # closes at 17:00 even though the office is open to 19:00
    (datetime(2025, 1, 16, 18, 0), False),
    (datetime(2025, 1, 17, 14, 59), True),   # Friday
    (datetime(2025, 1, 18, 11, 0), False),   # Saturday: closed all day
])
def test_transfer_is_open_only_during_transfer_hours(example, local: datetime, open_: bool) -> None:
    assert example.transfer_open(local.replace(tzinfo=NEW_YORK)) is open_


def test_transfer_hours_are_judged_in_the_business_time_zone(example) -> None:
    # 19:30 UTC on a Friday is 14:30 in New York (open); 21:30 UTC is 16:30, after Friday's 15:00.
    assert example.transfer_open(datetime(2025, 1, 17, 19, 30, tzinfo=timezone.utc)) is True
    assert example.transfer_open(datetime(2025, 1, 17, 21, 30, tzinfo=timezone.utc)) is False
    # 02:00 UTC on a Tuesday is still Monday evening in New York: closed.
    assert example.transfer_open(datetime(2025, 1, 14, 2, 0, tzinfo=timezone.utc)) is False


def test_transfer_hours_default_to_the_opening_hours() -> None:
    profile = parse_profile(valid())
    london = ZoneInfo("Europe/London")
    assert profile.transfer_open(datetime(2025, 1, 13, 17, 0, tzinfo=london)) is True   # Monday
    assert profile.transfer_open(datetime(2025, 1, 14, 12, 0, tzinfo=london)) is False  # Tuesday


# --- mistakes ----------------------------------------------------------------------------------------

def test_every_mistake_is_collected_into_one_error_and_each_is_named() -> None:
    broken = {
        "name": "Broken Biz",
        "timezone": "Mars/Olympus_Mons",
        "hours": {"mon": "9am-5pm", "tue": "17:00-09:00", "funday": "09:00-17:00"},
        "services": [{"name": "Cut"}],
        "owner_phone": "555-1234",
    }
    with pytest.raises(ProfileError) as caught:
        parse_profile(broken)
    message = str(caught.value)
    assert "timezone: 'Mars/Olympus_Mons'" in message
    assert "hours.mon: '9am-5pm' is not" in message
    assert "hours.tue: closes before it opens" in message
    assert "hours.funday: unknown weekday" in message
    assert "services[0]: needs a name and a positive duration_min" in message
    assert "services: list at least one service" in message
    assert "owner_phone: '555-1234' is not an E.164 number" in message
    assert message.count("\n  - ") == 7


@pytest.mark.parametrize(("change", "named"), [
    ({"timezone": "Not/AZone"}, "timezone"),
    ({"hours": {"mon": "09:00"}}, "hours.mon"),
    ({"hours": {"mon": "12:00-12:00"}}, "hours.mon: closes before it opens"),
    ({"hours": {"monday": "09:00-17:00"}}, "hours.monday: unknown weekday"),
    ({"transfer_hours": {"sun": "25:00-26:00"}}, "transfer_hours.sun"),
    ({"services": [{"name": "Cut", "duration_min": 0}]}, "services[0]"),
    ({"services": [{"name": "Cut", "duration_min": "long"}]}, "services[0]"),
    ({"services": [{"duration_min": 30}]}, "services[0]"),
    ({"services": []}, "services: list at least one service"),
    ({"owner_phone": "+1 555 123 4567"}, "owner_phone"),
    ({"owner_sms": "07700900123"}, "owner_sms"),
    ({"name": "  "}, "name"),
])
def test_a_single_mistake_is_named(change: dict, named: str) -> None:
    with pytest.raises(ProfileError, match="business profile has mistakes") as caught:
        parse_profile({**valid(), **change})
    assert named in str(caught.value)


def test_a_zero_booking_slot_step_is_a_named_mistake_not_a_crash() -> None:
    with pytest.raises(ProfileError, match="booking.slot_step_min"):
        parse_profile({**valid(), "booking": {"slot_step_min": 0}})


def test_a_missing_file_is_a_clear_profile_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ProfileError, match="BUSINESS_PROFILE: cannot read") as caught:
        load_profile(missing)
    assert str(missing) in str(caught.value)


def test_invalid_toml_is_a_clear_profile_error(tmp_path: Path) -> None:
    bad = tmp_path / "business.toml"
    bad.write_text('name = "Unclosed\n[hours]\nmon = 09:00-17:00\n')
    with pytest.raises(ProfileError, match="is not valid TOML") as caught:
        load_profile(bad)
    assert str(bad) in str(caught.value)


def test_invalid_json_is_a_clear_profile_error(tmp_path: Path) -> None:
    bad = tmp_path / "business.json"
    bad.write_text('{"name": "Corner Barbers",}')
    with pytest.raises(ProfileError, match="is not valid JSON"):
        load_profile(bad)


def test_a_json_profile_works_like_a_toml_one(tmp_path: Path) -> None:
    path = tmp_path / "business.json"
    path.write_text(json.dumps(valid()))
    profile = load_profile(path)
    assert profile.timezone == "Europe/London"
    assert profile.owner_phone == "+442071234567"
    assert [s.name for s in profile.services] == ["Haircut", "Beard trim"]
    assert profile.hours["sat"].spoken() == "10 am to 2 pm"


def test_a_json_profile_with_mistakes_reports_them(tmp_path: Path) -> None:
    path = tmp_path / "business.json"
    path.write_text(json.dumps({**valid(), "services": []}))
    with pytest.raises(ProfileError, match="list at least one service"):
        load_profile(path)
