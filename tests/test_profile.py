"""The business profile the owner edits: what Zylin says about the business, and every mistake named."""

from __future__ import annotations

import copy
import json
import re
import tomllib
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from main import main as cli_main
from services.receptionist import profile as profile_module
from services.receptionist.profile import ProfileError, load_profile, parse_profile
from services.receptionist.tool_args import TransferToHuman
from services.receptionist.tool_types import CallContext
from services.receptionist.tools import transfer_to_human
from tests.factories import EXAMPLE_PROFILE, example_profile

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
    return example_profile()


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
    assert example.transfer_open(datetime(2025, 1, 17, 19, 30, tzinfo=UTC)) is True
    assert example.transfer_open(datetime(2025, 1, 17, 21, 30, tzinfo=UTC)) is False
    # 02:00 UTC on a Tuesday is still Monday evening in New York: closed.
    assert example.transfer_open(datetime(2025, 1, 14, 2, 0, tzinfo=UTC)) is False


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


# --- strict keys: a typo is named, never silently defaulted ----------------------------------------

@pytest.mark.parametrize(("change", "named"), [
    ({"opening_hours": {"mon": "09:00-17:00"}}, "opening_hours: unknown key; did you mean 'hours'?"),
    ({"timezon": "Europe/London"}, "timezon: unknown key; did you mean 'timezone'?"),
    ({"holidays": {"2026-12-25": "closed"}}, "holidays: unknown key; did you mean 'exceptions'?"),
    ({"booking": {"capacty": 2}}, "booking.capacty: unknown key; did you mean 'capacity'?"),
    ({"services": [{"name": "Cut", "duration_min": 30, "prise": "£20"}]},
     "services[0].prise: unknown key; did you mean 'price'?"),
    ({"hours": {"monday": "09:00-17:00"}}, "hours.monday: unknown weekday; did you mean 'mon'?"),
    ({"transfer_hours": {"Thurs": "09:00-17:00"}}, "transfer_hours.Thurs: unknown weekday; did you mean 'thu'?"),
])
def test_a_misspelt_key_is_refused_with_the_key_named_and_the_closest_known_key(change: dict, named: str) -> None:
    with pytest.raises(ProfileError) as caught:
        parse_profile({**valid(), **change})
    assert f"  - {named}" in str(caught.value)


def test_a_key_like_no_known_one_is_refused_with_the_keys_there_are() -> None:
    with pytest.raises(ProfileError) as caught:
        parse_profile({**valid(), "colour": "blue"})
    assert "colour: unknown key; known keys: name, timezone, greeting, address," in str(caught.value)


def test_sms_confirmations_in_the_profile_points_to_the_setting() -> None:
    with pytest.raises(ProfileError) as caught:
        parse_profile({**valid(), "booking": {"capacity": 2, "sms_confirmations": True}})
    assert "booking.sms_confirmations: unknown key; SMS confirmations are the SMS_CONFIRMATIONS setting" \
        in str(caught.value)


def test_faq_topics_and_exception_dates_are_the_owner_s_own_keys() -> None:
    profile = parse_profile({**valid(), "faq": {"wheelchair access": "Step-free from the car park."},
                             "exceptions": {"2026-12-26": "10:00-12:00"}})
    assert profile.faq == {"wheelchair access": "Step-free from the car park."}
    assert profile.open_span(datetime(2026, 12, 26).date()).spoken() == "10 am to 12 pm"


def test_unknown_keys_are_reported_together_with_the_other_mistakes() -> None:
    with pytest.raises(ProfileError) as caught:
        parse_profile({**valid(), "greting": "Hi", "owner_phone": "555", "booking": {"slot_stepmin": 10}})
    lines = str(caught.value).splitlines()[1:]
    assert lines == ["  - greting: unknown key; did you mean 'greeting'?",
                     "  - owner_phone: '555' is not an E.164 number like +15551230000",
                     "  - booking.slot_stepmin: unknown key; did you mean 'slot_step_min'?"]


def test_every_key_the_example_shows_is_read() -> None:
    """Change each value the example shows: what is parsed changes (or is refused), so no key in
    the file the owner copies is decoration."""
    data = tomllib.loads(EXAMPLE_PROFILE.read_text())
    original = parse_profile(data)
    for path in _leaves(data):
        changed = copy.deepcopy(data)
        _mutate(changed, path)
        try:
            assert parse_profile(changed) != original, f"{'.'.join(map(str, path))} is never read"
        except ProfileError:
            pass  # refused: so it was read


def _leaves(table: object, path: tuple = ()) -> list[tuple]:
    if isinstance(table, dict):
        return [leaf for key, value in table.items() for leaf in _leaves(value, path + (key,))]
    if isinstance(table, list):
        return [leaf for i, value in enumerate(table) for leaf in _leaves(value, path + (i,))]
    return [path]


def _mutate(data: dict, path: tuple) -> None:
    *parents, last = path
    for key in parents:
        data = data[key]
    value = data[last]
    data[last] = value + 1 if isinstance(value, int) and not isinstance(value, bool) else f"{value} x"


# --- time zones: a place, never an abbreviation ----------------------------------------------------

@pytest.mark.parametrize(("zone", "suggested"), [
    ("EST", "use America/New_York (or America/Toronto, America/Panama for no daylight saving)"),
    ("PST", "use America/Los_Angeles"),
    ("CST", "use America/Chicago"),
    ("MST", "use America/Denver"),
    ("EST5EDT", "use America/New_York"),
    ("US/Eastern", "use America/New_York"),
    ("GMT", "use Europe/London (or UTC)"),
    ("Asia/Calcutta", "use 'Asia/Kolkata'"),
    ("GMT+5", "is a fixed offset"),
    ("Etc/GMT-3", "is a fixed offset"),
    ("America/New_Yrok", "did you mean 'America/New_York'?"),
])
def test_an_ambiguous_or_legacy_time_zone_is_refused_with_the_iana_names_to_use(zone: str, suggested: str) -> None:
    with pytest.raises(ProfileError) as caught:
        parse_profile({**valid(), "timezone": zone})
    line = next(row for row in str(caught.value).splitlines() if "timezone:" in row)
    assert line.startswith(f"  - timezone: {zone!r} ") and suggested in line


@pytest.mark.parametrize("zone", ["UTC", "Etc/UTC", "Europe/London", "America/Argentina/Buenos_Aires",
                                  "Africa/Dar_es_Salaam", "America/Port-au-Prince", "America/Indiana/Knox"])
def test_utc_and_canonical_area_city_zones_are_accepted(zone: str) -> None:
    assert parse_profile({**valid(), "timezone": zone}).timezone == zone


def test_every_zone_the_validator_suggests_is_one_it_accepts() -> None:
    suggested = set(profile_module._RENAMED.values()) | {
        name for hint in profile_module._LEGACY.values()
        for name in re.findall(r"\b[A-Z][a-z]+/[A-Za-z_/-]+", hint)} | {"UTC"}
    assert len(suggested) > 50
    for zone in sorted(suggested):
        assert profile_module.timezone_problem(zone) is None, zone
        ZoneInfo(zone)


# --- holidays: transfer hours follow the exceptions ------------------------------------------------

def test_exceptions_within_two_weeks_are_said_in_words(example) -> None:
    assert example.exceptions_sentence(date(2026, 12, 20)) == (
        "Exceptions to the usual hours: Thursday, December 24: open 9 am to 12 pm only; "
        "Friday, December 25: closed; Friday, January 1: closed.")
    assert example.exceptions_sentence(date(2026, 11, 30)) == ""


@pytest.mark.parametrize(("local", "open_"), [
    (datetime(2026, 12, 24, 10, 0), True),    # Christmas Eve: open 9-12, transfers 9-17 on Thursdays
    (datetime(2026, 12, 24, 11, 59), True),
    (datetime(2026, 12, 24, 12, 0), False),   # the office closed at noon: nobody to put through
    (datetime(2026, 12, 24, 13, 0), False),
    (datetime(2026, 12, 25, 10, 0), False),   # Christmas Day: closed, although a Friday
    (datetime(2026, 12, 23, 13, 0), True),    # an ordinary Wednesday
])
def test_transfer_follows_the_exceptions(example, local: datetime, open_: bool) -> None:
    assert example.transfer_open(local.replace(tzinfo=NEW_YORK)) is open_


@pytest.mark.parametrize(("local", "ok"), [
    (datetime(2026, 12, 24, 10, 0), True), (datetime(2026, 12, 24, 13, 0), False),
    (datetime(2026, 12, 25, 10, 0), False),
])
async def test_the_transfer_tool_refuses_on_a_holiday_by_the_call_s_clock(local: datetime, ok: bool) -> None:
    data = tomllib.loads(EXAMPLE_PROFILE.read_text())
    profile = parse_profile({**data, "owner_phone": "+15551230000"})
    at = local.replace(tzinfo=NEW_YORK)
    ctx = CallContext(call_sid="CA1", caller_phone="+15559876543", profile=profile, can_transfer=True,
                      clock=lambda: at)
    result = await transfer_to_human(ctx, TransferToHuman(reason="billing"))
    assert result.data["ok"] is ok
    if ok:
        assert result.action.kind == "transfer" and result.action.target == "+15551230000"
    else:
        assert result.action is None and "outside the hours" in result.data["reason"]


# --- python main.py check-profile ------------------------------------------------------------------

def test_check_profile_prints_what_it_understood_and_exits_0(capsys, monkeypatch) -> None:
    monkeypatch.setenv("PORT", "not-a-port")  # a bad server setting does not matter to the check
    assert cli_main(["check-profile", str(EXAMPLE_PROFILE)]) == 0
    out = capsys.readouterr().out
    assert out == ("ok: Bright Smile Dental (America/New_York), 3 services, hours mon tue wed thu fri, "
                   "exceptions 2026-12-24 09:00-12:00, 2026-12-25 closed, 2027-01-01 closed\n")


def test_check_profile_lists_every_mistake_and_exits_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "business.toml"
    bad.write_text('name = "Corner Barbers"\ntimezone = "EST"\n[opening_hours]\nmon = "09:00-17:00"\n'
                   '[[services]]\nname = "Cut"\nduration_min = 30\n')
    assert cli_main(["check-profile", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "opening_hours: unknown key; did you mean 'hours'?" in captured.err
    assert "timezone: 'EST' is an abbreviation, not a place; use America/New_York" in captured.err


def test_check_profile_of_a_missing_file_exits_2(tmp_path: Path, capsys) -> None:
    assert cli_main(["check-profile", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err
