"""The one way Zylin says a time and a day (services/receptionist/spoken.py)."""

from __future__ import annotations

from datetime import date, datetime, time

from services.receptionist.spoken import spoken_datetime, spoken_day, spoken_time


def test_times_are_said_on_a_twelve_hour_clock_with_minutes_only_when_there_are_some():
    assert [spoken_time(time(h, m)) for h, m in ((0, 0), (9, 0), (9, 5), (12, 0), (12, 30), (15, 0), (23, 45))] == [
        "12 am", "9 am", "9:05 am", "12 pm", "12:30 pm", "3 pm", "11:45 pm"]
    assert spoken_time(datetime(2026, 11, 2, 15, 30)) == "3:30 pm"


def test_a_clock_reading_says_the_minutes_on_the_hour_too():
    assert spoken_time(datetime(2026, 12, 20, 10, 0), always_minutes=True) == "10:00 am"
    assert spoken_time(time(14, 5), always_minutes=True) == "2:05 pm"


def test_days_and_moments_are_said_by_name():
    assert spoken_day(date(2026, 11, 2)) == "Monday, November 2"
    assert spoken_datetime(datetime(2026, 11, 2, 9, 0)) == "Monday, November 2 at 9 am"
