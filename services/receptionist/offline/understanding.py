"""Just enough English for the offline brain: dates, times, names, yes/no and what the caller wants.

Pure functions over one utterance; nothing here knows about the conversation. Each parser
returns None when it finds nothing, so the dialogue can ask again instead of guessing.

Conventions (said once here, relied on by the dialogue):
- Times without am/pm follow business hours: 1-6 means pm, 7-11 am, 12 noon ("at 3" is 3 pm,
  "at 9" is 9 am). A part of day in the same words wins ("at 8 in the evening" is 20:00), and
  a zero-padded "09:30" or a 24-hour "15:00" is taken as written.
- A bare weekday ("on Tuesday") is the next such day after today; "this Tuesday" may be today;
  "next Tuesday" is the Tuesday of next week. The dialogue reads the full date back, so a
  caller who meant otherwise hears it.
- Dates: "today", "tomorrow", "the day after tomorrow", "Nov 24", "November 24th",
  "24th of November", "the 24th", ISO "2026-11-24", and the holidays owners close for
  ("Christmas", "Christmas Eve", "Boxing Day", "New Year's Eve", "New Year's Day"). A date
  without a year that has passed is next year's. Numeric "24/11" is ambiguous (day/month or
  month/day) and is not understood.
"""

from __future__ import annotations

import calendar
import re
from datetime import date, timedelta
from typing import Literal

from services.receptionist.profile import BusinessProfile, Service

PartOfDay = Literal["morning", "afternoon", "evening"]
Intent = Literal["goodbye", "human", "message", "cancel", "reschedule", "hours", "prices", "address",
                 "book", "greeting", "other"]

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAY_WORDS = {name: i for i, name in enumerate(WEEKDAYS)} | {
    "tues": 1, "weds": 2, "thur": 3, "thurs": 3, "fri": 4}
MONTHS = {name: i for i, name in enumerate(calendar.month_name) if name} | {
    name: i for i, name in enumerate(calendar.month_abbr) if name} | {"Sept": 9}
MONTHS = {name.lower(): number for name, number in MONTHS.items()}
_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "thirty": 30,
    "forty five": 45, "forty-five": 45, "fourty five": 45,
}
_ORDINAL = r"(?:st|nd|rd|th)"
_MONTH = r"(" + "|".join(sorted(MONTHS, key=len, reverse=True)) + r")\b\.?"


def normalise(text: str) -> str:
    """Lower case, straight apostrophes, "p.m." as "pm", single spaces."""
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    text = re.sub(r"\b([ap])\.\s?m\b\.?", r"\1m", text)
    return re.sub(r"\s+", " ", text).strip()


# --- what the caller wants --------------------------------------------------------------------

_BYE = re.compile(r"\b(bye|goodbye)\b|\bthat(?:'s| is) all\b")
_MESSAGE = re.compile(r"\b(leave|take|pass on|give)\b.*\bmessage\b")
_HUMAN = re.compile(r"\b(human|operator|manager)\b|pressed 0|\breal person\b"
                    r"|\b(speak|talk|put me|through|transfer|connect)\b.*"
                    r"\b(person|someone|somebody|anyone|anybody|staff|owner)\b")
_CANCEL = re.compile(r"\bcancel\w*\b|\bcan(?:'t| ?not) make it\b|\bcall off\b")
_MOVE = re.compile(r"\b(reschedul\w*|postpone|rebook)\b"
                   r"|\b(move|change|push|shift)\b.*\b(appointment|booking|it)\b")
_HOURS = re.compile(r"\b(hours?|open|opens|opening|close|closes|closed|closing)\b")
_PRICES = re.compile(r"\b(services?|prices?|cost\w*|offer\w*)\b|how much")
_ADDRESS = re.compile(r"\b(address|located|location)\b|where are you")
_BOOK = re.compile(r"\b(book\w*|appointments?|schedul\w*|reserv\w*)\b")
_GREETING_WORDS = {"hi", "hello", "hey", "hiya", "good", "morning", "afternoon", "evening", "there"}


def intent(text: str) -> Intent:
    """The caller's main wish, by keywords; the first rule that matches wins (order matters)."""
    text = normalise(text)
    for kind, pattern in (("goodbye", _BYE), ("human", _HUMAN), ("message", _MESSAGE), ("cancel", _CANCEL),
                          ("reschedule", _MOVE), ("hours", _HOURS), ("prices", _PRICES),
                          ("address", _ADDRESS), ("book", _BOOK)):
        if pattern.search(text):
            return kind  # type: ignore[return-value]
    words = re.findall(r"[a-z']+", text)
    if words and all(word in _GREETING_WORDS for word in words):
        return "greeting"
    return "other"


def find_service(text: str, profile: BusinessProfile) -> Service | None:
    """A service of the profile named in the text: its full name, else a word of it ("clean")."""
    text = normalise(text)
    words = set(re.findall(r"[a-z]+", text))
    for service in sorted(profile.services, key=lambda s: len(s.name), reverse=True):
        if re.search(rf"\b{re.escape(service.name.lower())}s?\b", text):
            return service
    for service in profile.services:
        for part in re.findall(r"[a-z]+", service.name.lower()):
            if len(part) >= 5 and any(w == part + "s" or (len(w) >= 5 and part.startswith(w))
                                      for w in words):
                return service
    return None


# --- dates --------------------------------------------------------------------------------------

def _year_ahead(today: date, month: int, day: int, year: int | None) -> date | None:
    """The date, in the given year or else the next one that is not in the past."""
    try:
        found = date(year or today.year, month, day)
        if year is None and found < today:
            found = date(today.year + 1, month, day)
    except ValueError:
        return None
    return found


def _month_ahead(today: date, day: int) -> date | None:
    """'the 24th': this month if still ahead, else the next month that has that day."""
    year, month = today.year, today.month
    for _ in range(13):
        if day <= calendar.monthrange(year, month)[1] and date(year, month, day) >= today:
            return date(year, month, day)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return None


# Holidays by name, most specific first ("Christmas Eve" before "Christmas").
_HOLIDAYS = ((r"\bchristmas eve\b", 12, 24), (r"\b(?:christmas|xmas)(?: day)?\b", 12, 25),
             (r"\bboxing day\b", 12, 26), (r"\bnew year(?:'s|s)? eve\b", 12, 31),
             (r"\bnew year(?:'s|s)(?: day)?\b|\bnew year day\b", 1, 1))


def _holiday(text: str, today: date) -> date | None:
    for pattern, month, day in _HOLIDAYS:
        if re.search(pattern, text):
            return _year_ahead(today, month, day, None)
    return None


def parse_date(text: str, today: date) -> date | None:
    """A calendar date named in the text, relative to `today` (see the module notes)."""
    text = normalise(text)
    if m := re.search(r"\b(\d{4})-(\d{2})-(\d{2})\b", text):
        try:
            return date(int(m[1]), int(m[2]), int(m[3]))
        except ValueError:
            return None
    if m := re.search(rf"\b{_MONTH}\s+(\d{{1,2}}){_ORDINAL}?\b(?:,?\s+(\d{{4}})\b)?", text):
        return _year_ahead(today, MONTHS[m[1]], int(m[2]), int(m[3]) if m[3] else None)
    if m := re.search(rf"\b(\d{{1,2}}){_ORDINAL}?\s+(?:of\s+)?{_MONTH}(?:,?\s*(\d{{4}})\b)?", text):
        return _year_ahead(today, MONTHS[m[2]], int(m[1]), int(m[3]) if m[3] else None)
    if (holiday := _holiday(text, today)) is not None:
        return holiday
    if m := re.search(rf"\b(\d{{1,2}}){_ORDINAL}\b", text):
        return _month_ahead(today, int(m[1]))
    if re.search(r"\bday after tomorrow\b", text):
        return today + timedelta(days=2)
    if re.search(r"\btomorrow\b", text):
        return today + timedelta(days=1)
    if re.search(r"\b(today|tonight|this (morning|afternoon|evening))\b", text):
        return today
    names = "|".join(sorted(_WEEKDAY_WORDS, key=len, reverse=True))
    if m := re.search(rf"\b(?:(next|this|coming)\s+)?({names})\b", text):
        weekday = _WEEKDAY_WORDS[m[2]]
        ahead = (weekday - today.weekday()) % 7
        if m[1] == "next":
            return today + timedelta(days=7 - today.weekday() + weekday)  # in next week
        if m[1] != "this" and ahead == 0:
            ahead = 7  # "on Monday", said on a Monday, is a week away
        return today + timedelta(days=ahead)
    return None


# --- times --------------------------------------------------------------------------------------

def parse_part_of_day(text: str) -> PartOfDay | None:
    """'in the morning', 'tomorrow afternoon', 'tonight'; a 'good morning' greeting is not one."""
    text = re.sub(r"\bgood (morning|afternoon|evening)\b", "", normalise(text))
    if m := re.search(r"\b(morning|afternoon|evening)s?\b", text):
        return m[1]  # type: ignore[return-value]
    if re.search(r"\b(tonight|night)\b", text):
        return "evening"
    return None


def _with_digits(text: str) -> str:
    words = "|".join(sorted(map(re.escape, _NUMBER_WORDS), key=len, reverse=True))
    return re.sub(rf"\b({words})\b", lambda m: str(_NUMBER_WORDS[m[1]]), text)


_FILLER = r"(?:um|uh|er|erm|so|ok|okay|well|maybe|say|let's say|let's do|how about|what about|then|please)"


# "at 3", "around 10 30" -- not "at 3/4", "at 10-11" or the day in "at the 3rd"
_CUED_HOUR = r"\b(?:at|around|about|by|say) (\d{1,2})(?: (\d{2}))?\b(?![:/\-]|\s*(?:st|nd|rd|th)\b)"


def parse_time(text: str) -> tuple[int, int] | None:
    """A clock time as (hour, minute) in 24-hour time; am/pm by the module's business-hours rule."""
    text = _with_digits(normalise(text))
    if re.search(r"\b(noon|midday|lunchtime)\b", text):
        return 12, 0
    if re.search(r"\bmidnight\b", text):
        return 0, 0
    found: tuple[str, int, str] | None = None  # the hour as said, minutes, am/pm
    if m := re.search(r"\b(half|quarter) past (\d{1,2})\b", text):
        found = m[2], 30 if m[1] == "half" else 15, ""
    elif m := re.search(r"\bquarter to (\d{1,2})\b", text):
        found = str(int(m[1]) - 1 or 12), 45, ""
    elif m := re.search(r"\b(\d{1,2}):(\d{2})\s*(am|pm)?\b", text):
        found = m[1], int(m[2]), m[3] or ""
    elif m := re.search(r"\b(\d{1,2})(?: (\d{2}))?\s*(am|pm|o'?clock)\b", text):
        found = m[1], int(m[2] or 0), m[3] if m[3] in ("am", "pm") else ""
    elif m := re.search(_CUED_HOUR, text):
        found = m[1], int(m[2] or 0), ""
    elif m := re.search(r"\b(\d{1,2}) in the (?:morning|afternoon|evening)\b", text):
        found = m[1], 0, ""
    elif m := re.fullmatch(rf"(?:{_FILLER}[ ,]*)*(\d{{1,2}})(?: (\d{{2}}))?(?:[ ,]*{_FILLER})*[.!?]?", text):
        found = m[1], int(m[2] or 0), ""
    if found is None:
        return None
    said, minute, suffix = found
    hour = int(said)
    if hour > 23 or minute > 59 or (suffix and not 1 <= hour <= 12):
        return None
    if suffix == "pm" and hour < 12:
        hour += 12
    elif suffix == "am" and hour == 12:
        hour = 0
    elif not suffix and hour <= 12 and not said.startswith("0"):
        part = parse_part_of_day(text)
        if part in ("afternoon", "evening"):
            hour += 12 if hour < 12 else 0
        elif part is None and 1 <= hour <= 6:
            hour += 12  # business hours: "at 3" is 3 pm
    return hour, minute


# --- who is calling -----------------------------------------------------------------------------

_NOT_NAMES = set("""
a about again all also am an and any anyone appointment are as at available be because book
booking but by call calling can cancel change confirm correct could do does don't fine for
from good great has have hello here hey hi how i i'd i'll i'm in is it it's just like looking
made make may me morning afternoon evening my need next no not now of off ok okay on one or
perfect please really right see so sorry speaking sure that that's the them then there this
to today tomorrow tonight um uh want was we well what when where which who why will with
would yeah yes yep you your
""".split()) | set(WEEKDAYS)
_NAME_WORD = r"[^\W\d_][\w'\-]*"


def _name_from(words: list[str]) -> str | None:
    taken: list[str] = []
    while words and words[0].lower() in ("actually", "just", "um", "uh", "er", "really"):
        words = words[1:]
    for word in words:
        if not re.fullmatch(_NAME_WORD, word) or word.lower() in _NOT_NAMES or len(taken) == 3:
            break
        taken.append(word if not word.islower() else
                     re.sub(r"[^\W\d_]+", lambda m: m[0].capitalize(), word))
    return " ".join(taken) or None


def parse_name(text: str, expecting: bool = False) -> str | None:
    """The caller's name: 'my name is Ann Lee', 'this is Ann', and, when the name was just asked
    for (`expecting`), also 'it's Ann', "I'm Ann" or just 'Ann Lee'."""
    text = text.replace("\u2019", "'").strip()
    cues = [r"\bmy name(?: is|'s)\s+", r"\bname(?: is|'s)\s+", r"\bcall me\s+",
            r"^(?:(?:hi|hello|hey|yes|yeah|sure)\b[\s,!.]*)*(?:this is|it's|it is)\s+"]
    if expecting:
        cues += [r"^(?:(?:yes|yeah|sure|ok|okay|um|uh)\b[\s,!.]*)*(?:i'm|i am|it's|it is)\s+"]
    for cue in cues:
        if m := re.search(cue, text, re.IGNORECASE):
            return _name_from(re.findall(r"[\w'\-]+|[^\w\s]", text[m.end():]))
    if expecting:
        words = re.findall(r"[\w'\-]+|[^\w\s]", text.rstrip(".!"))
        words = [w for w in words if w.lower() not in ("um", "uh", "please", "sure", "yes", "yeah", ",")]
        if 0 < len(words) <= 3:
            name = _name_from(words)
            if name is not None and len(name.split()) == len(words):
                return name
    return None


def parse_phone(text: str, expecting: bool = False) -> str | None:
    """A phone number the caller gives ("my number is 555 123 4567"): its digits, with a leading
    +. Digits count only after a cue word, unless the number was just asked for (`expecting`)."""
    text = normalise(text)
    cue = re.search(r"\b(number|phone|cell|mobile|reach me|call me)\b", text)
    if cue is None and not expecting:
        return None
    if m := re.search(r"(\+?\d[\d\s\-().]{5,}\d)", text[cue.end() if cue else 0:]):
        digits = re.sub(r"\D", "", m[1])
        if 7 <= len(digits) <= 15:
            return ("+" if m[1].startswith("+") else "") + digits
    return None


def wants_other_number(text: str) -> bool:
    """'use a different number', 'not this number', 'my cell instead'."""
    return bool(re.search(r"\b(different|another|other|not this|not that|new|cell|mobile) (?:phone )?"
                          r"(number|phone)\b", normalise(text)))


def parse_code(text: str) -> str | None:
    """A booking confirmation code said as one token of letters and digits ('ABC123')."""
    for token in re.findall(r"\b[a-z0-9]{5,10}\b", normalise(text)):
        if (re.search(r"\d", token) and re.search(r"[a-z]", token)
                and not re.fullmatch(rf"\d+(?:am|pm|{_ORDINAL})", token)):
            return token.upper()
    return None


# --- answers to questions -----------------------------------------------------------------------

_ANSWERS: dict[str, bool | None] = {
    **dict.fromkeys(["no problem", "not a problem", "no worries", "yes", "yeah", "yep", "yup", "yea",
                     "ya", "sure", "certainly", "correct", "right", "that's right", "ok", "okay",
                     "alright", "all right", "that works", "works for me", "works", "sounds good",
                     "sounds great", "perfect", "great", "go ahead", "please do", "do it",
                     "absolutely", "definitely", "of course", "fine", "good", "book it",
                     "confirm", "lovely", "brilliant"], True),
    **dict.fromkeys(["no", "nope", "nah", "not really", "not quite", "not right", "not correct",
                     "not good", "don't", "do not", "doesn't work", "does not work",
                     "won't work", "can't", "cannot", "another time", "different time",
                     "another day", "different day", "something else", "wrong", "incorrect",
                     "never mind", "nevermind", "rather not", "neither", "none"], False),
    **dict.fromkeys(["not sure", "i don't know", "don't know", "maybe", "dunno"], None),
}
_ANSWER = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _ANSWERS), key=len, reverse=True)) + r")\b")


def parse_yes_no(text: str) -> bool | None:
    """True for yes, False for no, None when neither (or unsure); the first answer said wins."""
    m = _ANSWER.search(normalise(text))
    return _ANSWERS[m[1]] if m else None


def parse_choice(text: str) -> int | None:
    """Which of the options read out: 'the first one' -> 0, 'the second' -> 1, 'the last' -> -1."""
    text = normalise(text)
    for pattern, index in ((r"\b(first|earliest|the earlier)\b", 0), (r"\bsecond\b", 1),
                           (r"\bthird\b", 2), (r"\b(last|latest|the later)\b", -1),
                           (r"\b(either|whichever|any of them|doesn't matter|don't mind)\b", 0)):
        if re.search(pattern, text):
            return index
    return None
