"""How Zylin says a time and a day, the one way for the voice, the prompt and the offline brain:
"3 pm", "3:30 pm", "Monday, November 2 at 9 am". Said aloud, so no leading zeros and no 24-hour
clock; the console and the terminal show times with strftime instead.
"""

from __future__ import annotations

from datetime import date, datetime, time


def spoken_time(at: time | datetime, *, always_minutes: bool = False) -> str:
    """'3 pm', '3:30 pm'; `always_minutes` says them on the hour too ('3:00 pm'), as a clock reads."""
    hour = at.hour % 12 or 12
    minutes = f":{at.minute:02d}" if at.minute or always_minutes else ""
    return f"{hour}{minutes} {'am' if at.hour < 12 else 'pm'}"


def spoken_day(day: date) -> str:
    """'Monday, November 2'."""
    return f"{day:%A, %B} {day.day}"


def spoken_datetime(at: datetime) -> str:
    """'Monday, November 2 at 9 am'."""
    return f"{spoken_day(at)} at {spoken_time(at)}"
