"""The offline brain's English: dates, times, names, answers and wishes, each from one utterance."""

from __future__ import annotations

from datetime import date

import pytest

from services.receptionist.offline import understanding as nlu
from tests.factories import dental_profile

TODAY = date(2026, 11, 23)  # a Monday
PROFILE = dental_profile(services=[  # names that overlap, for picking the one the caller meant
    {"name": "Cleaning", "duration_min": 45}, {"name": "Whitening", "duration_min": 60},
    {"name": "Consultation", "duration_min": 30}, {"name": "Deep Cleaning", "duration_min": 90}])


@pytest.mark.parametrize("said, expected", [
    ("today", date(2026, 11, 23)),
    ("tomorrow at 3", date(2026, 11, 24)),
    ("the day after tomorrow", date(2026, 11, 25)),
    ("on Tuesday", date(2026, 11, 24)),
    ("on Monday", date(2026, 11, 30)),  # said on a Monday: a week away
    ("this Monday", date(2026, 11, 23)),
    ("this Friday", date(2026, 11, 27)),
    ("next Friday", date(2026, 12, 4)),  # the Friday of next week
    ("next Monday", date(2026, 11, 30)),
    ("how about Thurs?", date(2026, 11, 26)),
    ("Nov 24", date(2026, 11, 24)),
    ("November 24th at 10", date(2026, 11, 24)),
    ("24 November", date(2026, 11, 24)),
    ("the 24th of November", date(2026, 11, 24)),
    ("on the 24th", date(2026, 11, 24)),
    ("the 5th", date(2026, 12, 5)),  # passed this month: next month's
    ("the 31st", date(2026, 12, 31)),  # November has no 31st
    ("November 2", date(2027, 11, 2)),  # passed this year: next year's
    ("December 1, 2027", date(2027, 12, 1)),
    ("2026-11-24", date(2026, 11, 24)),
    ("this afternoon", date(2026, 11, 23)),
    ("tonight", date(2026, 11, 23)),
    ("24/11", None),  # day/month or month/day: ambiguous, not guessed
    ("February 30", None),
    ("at 3", None),
    ("May I book a cleaning?", None),
    ("I'd like a cleaning", None),
])
def test_dates_are_read_relative_to_today(said: str, expected: date | None) -> None:
    assert nlu.parse_date(said, TODAY) == expected


@pytest.mark.parametrize("said, expected", [
    ("Are you open on Christmas?", date(2026, 12, 25)),
    ("what about christmas day", date(2026, 12, 25)),
    ("Xmas", date(2026, 12, 25)),
    ("on Christmas Eve", date(2026, 12, 24)),
    ("Boxing Day", date(2026, 12, 26)),
    ("New Year's Eve", date(2026, 12, 31)),
    ("are you open on new years day", date(2027, 1, 1)),
    ("New Year\u2019s", date(2027, 1, 1)),
    ("sometime in the new year", None),  # a season, not a date
])
def test_holidays_are_read_as_their_next_date(said: str, expected: date | None) -> None:
    assert nlu.parse_date(said, TODAY) == expected


def test_a_holiday_already_past_this_year_is_next_year_s() -> None:
    assert nlu.parse_date("christmas", date(2026, 12, 27)) == date(2027, 12, 25)
    assert nlu.parse_date("christmas", date(2026, 12, 25)) == date(2026, 12, 25)  # today still counts


@pytest.mark.parametrize("said, expected", [
    ("at 3", (15, 0)),  # 1-6 without am/pm: business hours, so pm
    ("at 9", (9, 0)),  # 7-11: am
    ("at 12", (12, 0)),
    ("3:30 pm", (15, 30)),
    ("3:30", (15, 30)),
    ("10:15", (10, 15)),
    ("7 pm", (19, 0)),
    ("7 p.m.", (19, 0)),
    ("5 am", (5, 0)),
    ("12 am", (0, 0)),
    ("12 pm", (12, 0)),
    ("09:30", (9, 30)),  # zero-padded: as written
    ("15:00", (15, 0)),
    ("half past two", (14, 30)),
    ("quarter past ten", (10, 15)),
    ("quarter to four", (15, 45)),
    ("at three thirty", (15, 30)),
    ("4 o'clock", (16, 0)),
    ("noon", (12, 0)),
    ("around midday", (12, 0)),
    ("at 10 in the morning", (10, 0)),
    ("at 8 in the evening", (20, 0)),
    ("tomorrow afternoon at 12", (12, 0)),
    ("how about 4?", (16, 0)),
    ("11", (11, 0)),
    ("on the 24th at 10", (10, 0)),
    ("the 24th", None),
    ("November 24", None),
    ("at 25", None),
    ("13 pm", None),
    ("3:75", None),
    ("the first one", None),
    ("my name is Ann", None),
])
def test_times_are_read_as_a_24_hour_clock(said: str, expected: tuple[int, int] | None) -> None:
    assert nlu.parse_time(said) == expected


@pytest.mark.parametrize("said, expected", [
    ("in the morning", "morning"),
    ("tomorrow afternoon", "afternoon"),
    ("this evening", "evening"),
    ("tonight", "evening"),
    ("good morning", None),
    ("good morning, anything in the afternoon?", "afternoon"),
    ("at 3", None),
])
def test_parts_of_day(said: str, expected: str | None) -> None:
    assert nlu.parse_part_of_day(said) == expected


@pytest.mark.parametrize("said, expecting, expected", [
    ("my name is Ann Lee", False, "Ann Lee"),
    ("My name's ann lee, and I'd like a cleaning", False, "Ann Lee"),
    ("my name is June", False, "June"),
    ("sorry, my name is actually Ann Lee", False, "Ann Lee"),
    ("Hi, this is Ann calling about a cleaning", False, "Ann"),
    ("It's Mary-Jane Smith", False, "Mary-Jane Smith"),
    ("it's o'brien", True, "O'Brien"),
    ("I'm Ann", True, "Ann"),
    ("Ann Lee", True, "Ann Lee"),
    ("Ann Lee", False, None),  # bare words are a name only when the name was asked for
    ("I'm Ann", False, None),
    ("it's for a cleaning", True, None),
    ("I'm looking for a cleaning", True, None),
    ("I'd like a cleaning tomorrow", True, None),
    ("tomorrow", True, None),
    ("yes", True, None),
])
def test_names(said: str, expecting: bool, expected: str | None) -> None:
    assert nlu.parse_name(said, expecting=expecting) == expected


@pytest.mark.parametrize("said, expected", [
    ("yes", True), ("Yeah.", True), ("sure", True), ("that works", True), ("correct", True),
    ("yes please", True), ("sounds good", True), ("go ahead", True), ("no problem, book it", True),
    ("no", False), ("nope", False), ("another time", False), ("that doesn't work", False),
    ("no, that's wrong", False), ("not really", False), ("that's not right", False),
    ("I'm not sure", None), ("hmm", None), ("what are your hours?", None),
])
def test_yes_and_no(said: str, expected: bool | None) -> None:
    assert nlu.parse_yes_no(said) is expected


@pytest.mark.parametrize("said, expected", [
    ("I'd like a cleaning", "Cleaning"),
    ("a deep cleaning please", "Deep Cleaning"),  # the longest name that fits
    ("two cleanings", "Cleaning"),
    ("just a clean", "Cleaning"),
    ("WHITENING", "Whitening"),
    ("can I come in for a consult", "Consultation"),
    ("a haircut", None),
    ("in the morning", None),
])
def test_services_are_found_by_name_or_a_word_of_it(said: str, expected: str | None) -> None:
    found = nlu.find_service(said, PROFILE)
    assert (found.name if found else None) == expected


@pytest.mark.parametrize("said, expected", [
    ("Bye!", "goodbye"),
    ("No, that's all, thanks", "goodbye"),
    ("Can I talk to a real person?", "human"),
    ("Can I speak to someone?", "human"),
    ("(caller pressed 0)", "human"),
    ("I need to cancel my appointment", "cancel"),
    ("I can't make it tomorrow", "cancel"),
    ("I'd like to reschedule", "reschedule"),
    ("move my appointment to Friday at 10", "reschedule"),
    ("What time do you close on Friday?", "hours"),
    ("Are you open on Christmas?", "hours"),
    ("how much is whitening", "prices"),
    ("where are you?", "address"),
    ("I'd like to book an appointment", "book"),
    ("hello there", "greeting"),
    ("I'd like a cleaning tomorrow at 3", "other"),
    ("what's the closest slot", "other"),
])
def test_intents(said: str, expected: str) -> None:
    assert nlu.intent(said) == expected


@pytest.mark.parametrize("said, expected", [
    ("the first one", 0), ("the second", 1), ("the third please", 2), ("the last one", -1),
    ("the earlier one", 0), ("either is fine", 0),
    ("do you have anything later?", None), ("10:15", None),
])
def test_choices_among_the_options_read_out(said: str, expected: int | None) -> None:
    assert nlu.parse_choice(said) == expected


@pytest.mark.parametrize("said, expecting, expected", [
    ("my number is 555 123 4567", False, "5551234567"),
    ("you can call me on +1 (555) 123-4567", False, "+15551234567"),
    ("555-1234", True, "5551234"),
    ("on 2026-11-24", False, None),  # digits without a cue are not a number
    ("my number is 12", False, None),
])
def test_phone_numbers(said: str, expecting: bool, expected: str | None) -> None:
    assert nlu.parse_phone(said, expecting=expecting) == expected


@pytest.mark.parametrize("said, expected", [
    ("please use a different number", True), ("put my cell number", True),
    ("that's the right number", False), ("yes", False),
])
def test_asking_for_another_number(said: str, expected: bool) -> None:
    assert nlu.wants_other_number(said) is expected


@pytest.mark.parametrize("said, expected", [
    ("cancel booking ABC123", "ABC123"), ("the code is x7k2q9", "X7K2Q9"),
    ("at 3pm on the 24th", None), ("cancel my appointment", None),
])
def test_confirmation_codes(said: str, expected: str | None) -> None:
    assert nlu.parse_code(said) == expected


def test_normalise_straightens_apostrophes_and_am_pm() -> None:
    assert nlu.normalise("It\u2019s  3 P.M. ") == "it's 3 pm"
