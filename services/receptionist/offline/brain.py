"""The offline receptionist's brain: keyword rules over the same history, tools and streaming shape.

It runs when no model is configured: LLM_PROVIDER=mock (the setting keeps that name) or no
OpenAI key. It answers from the business profile and calls the receptionist's tools like the
real model would, so the engine's tool loop, streaming and follow-ups run unchanged without a
network. The words are understood by `understanding`; this module holds the dialogue.

The dialogue state (the appointment being booked, moved or cancelled, and the question last
asked) belongs to one call, and is rebuilt from that call's history on every turn: each caller
line and tool result goes through the same rules again. So it always agrees with what the
engine kept — after a barge-in, a tool result the brain never saw is still folded in.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from services.llm.base import BrainOutput, Message, TextDelta, ToolCall, ToolSpec
from services.receptionist.lines import ANYTHING_ELSE, LET_ME_CHECK, OFFER_MESSAGE, PASS_ON
from services.receptionist.offline import understanding as nlu
from services.receptionist.profile import BusinessProfile, Service
from services.receptionist.spoken import spoken_datetime, spoken_day, spoken_time

BOOKING = ("I'd be happy to help you book an appointment. "
           "Which service would you like, and what day and time suit you?")
GREETING = "Hello! How can I help you today?"
FALLBACK = ("Sorry, I can help with our hours, services and prices, booking an appointment, "
            "or taking a message. What would you like to do?")
BROKE = "I'm sorry, something went wrong on my side."
# What a refused tool call needs from the caller (its `ask`), said in this brain's own words: the
# tool's `reason` for these may be worded for a brain, and its `note` always is.
ASKED = {"name": "I'm sorry, I still need a name for the booking.",
         "phone": "I'm sorry, I need a phone number for the booking.",
         "date": "I'm sorry, I didn't catch the day.",
         "time": "I'm sorry, I didn't catch the time.",
         "which": "I'm sorry, I need to know which appointment you mean."}

Call = tuple[str, dict[str, Any]]  # a tool name and its arguments
Reply = tuple[str, Call | None]  # what to say, and the tool to call after saying it
Task = Literal["book", "move", "cancel"]
# The question last asked: what the caller's next words most likely answer.
Awaiting = Literal["", "service", "when", "name", "phone", "pick", "which", "confirm", "more"]
_EXISTING = re.compile(r"\bmy (appointment|booking|reservation)\b|\bappointment i have\b")


class OfflineBrain:
    """A Brain that follows fixed rules: predictable conversations for tests, demos and benchmarks.
    It is the profile's own receptionist, so it reads the profile, not the instructions."""

    def __init__(self, profile: BusinessProfile, delay_ms: float = 0.0,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.profile = profile
        self.delay_s = delay_ms / 1000
        self.clock = clock or profile.now  # "today" and "tomorrow" are the business's
        self._ids = itertools.count(1)

    async def respond(self, instructions: str, history: list[Message],
                      tools: list[ToolSpec]) -> AsyncIterator[BrainOutput]:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)  # first-token latency
        offered = {tool.name for tool in tools}
        text, call = self._decide(history, offered)
        for word in re.findall(r"\S+\s*", text):
            yield TextDelta(word)
            await asyncio.sleep(0)  # stream, as tokens arrive
        if call is not None:
            yield ToolCall(f"call_{next(self._ids)}", call[0], call[1])

    async def close(self) -> None:
        return None

    def _decide(self, history: list[Message], offered: set[str]) -> Reply:
        if not history or history[-1].role == "system":
            return self.profile.greeting, None
        if history[-1].role == "assistant":
            return "", None  # the assistant already spoke last: nothing to add
        now = self.clock()
        today = (now.astimezone(self.profile.tz) if now.tzinfo else now).date()
        dialogue = Dialogue(self.profile, today, offered)
        reply: Reply = ("", None)
        for i, message in enumerate(history):
            if message.role == "user":
                reply = dialogue.hear(message.content, _asked_to_pass_on(history[:i + 1]))
            elif message.role == "tool":
                name = message.name or _tool_name(history, message.tool_call_id)
                reply = dialogue.see(name, _result_data(message))
        return reply


@dataclass
class Plan:
    """The appointment being booked, moved or cancelled."""
    task: Task
    service: str = ""
    day: date | None = None
    time: tuple[int, int] | None = None
    part: nlu.PartOfDay | None = None
    start: str = ""  # "YYYY-MM-DDTHH:MM", a slot a tool said is free
    offers: list[str] = field(default_factory=list)  # free slots read out, waiting for a pick
    code: str = ""  # a confirmation code the caller said
    bookings: list[dict[str, Any]] | None = None  # the caller's, once find_bookings answered
    booking: dict[str, Any] | None = None  # the one to move or cancel; {} = "by caller's phone"

    def forget_slot(self) -> None:
        self.start, self.offers = "", []


class Dialogue:
    """One call's conversation: hears caller lines and tool results, and says what comes next."""

    def __init__(self, profile: BusinessProfile, today: date, offered: set[str]) -> None:
        self.profile = profile
        self.today = today
        self.offered = offered
        self.plan: Plan | None = None
        self.awaiting: Awaiting = ""
        self.question = ""  # the last question, to ask again when an answer is not understood
        self.name = ""
        self.phone = ""  # "" = the number the caller is calling from (the tool layer fills it in)

    # --- the caller speaks ------------------------------------------------------------------------

    def hear(self, said: str, passing_on: bool) -> Reply:
        text = nlu.normalise(said)
        kind = nlu.intent(text)
        if kind == "goodbye":
            return self._goodbye()
        # A caller answering "what should I pass on?" is dictating, even if they say "manager".
        if passing_on and said.strip():
            if "take_message" in self.offered:
                return "", ("take_message", {"message": said.strip(), "phone": ""})
            return "Sorry, I can't take messages right now. Please call back during our opening hours.", None
        if kind == "human":
            if "transfer_to_human" in self.offered:
                return "", ("transfer_to_human", {"reason": "caller asked for a person"})
            return f"I'm sorry, I can't put you through right now. {OFFER_MESSAGE}", None
        if kind == "message" and self.plan is None:
            if "take_message" in self.offered:
                return OFFER_MESSAGE, None
            return "Sorry, I can't take messages right now. Please call back during our opening hours.", None
        plan = self.plan
        if kind == "cancel":
            if plan is not None and plan.task == "book" and not _EXISTING.search(text):
                return self._drop("No problem, I won't book anything.")
            if plan is None or plan.task != "cancel":
                return self._start("cancel", said)
        if kind == "reschedule" and (plan is None or plan.task == "cancel"):
            return self._start("move", said)
        if plan is not None and (reply := self._continue(text, said)) is not None:
            return reply
        if (answer := self._answer_question(text, kind)) is not None:
            return (f"{answer} {self.question}" if plan is not None else answer), None
        if (kind == "book" or self._mentions_booking(text)) and (plan is None or plan.task != "book"):
            return self._start("book", said)
        if plan is not None and not self.awaiting:
            return self._next()  # its tool call was cut off (barge-in): take the step again
        if plan is not None:
            return f"Sorry, I didn't catch that. {self.question}", None
        if self.awaiting == "more" and (yes := nlu.parse_yes_no(text)) is not None:
            return self._goodbye() if yes is False else ("Of course. What else can I help you with?", None)
        return (GREETING if kind == "greeting" else FALLBACK), None

    def _goodbye(self) -> Reply:
        goodbye = f"Thanks for calling {self.profile.name}. Goodbye!"
        if "end_call" not in self.offered:
            return goodbye, None
        return goodbye, ("end_call", {"reason": "caller said goodbye"})

    def _answer_question(self, text: str, kind: nlu.Intent) -> str | None:
        if kind == "hours":
            return self._hours_answer(text)
        if kind == "prices":
            service = nlu.find_service(text, self.profile) or self._planned_service()
            return _service_sentence(service) if service else self.profile.services_sentence()
        for key, answer in self.profile.faq.items():
            if re.search(rf"\b{re.escape(key.lower())}\b", text):
                return answer
        if kind == "address" and self.profile.address:
            return f"We're at {self.profile.address}."
        return None

    def _hours_answer(self, text: str) -> str:
        """A named day is answered for that date (holidays included); otherwise the week, and
        any holidays or special hours coming up in the next two weeks."""
        day = nlu.parse_date(text, self.today)
        if day is not None:
            return _day_hours(self.profile, day, self.today)
        week = self.profile.hours_sentence()
        upcoming = self.profile.exceptions_sentence(self.today)
        return f"{week} {upcoming}" if upcoming else week

    def _mentions_booking(self, text: str) -> bool:
        return bool(nlu.find_service(text, self.profile) or nlu.parse_date(text, self.today)
                    or nlu.parse_time(text))

    def _start(self, task: Task, said: str) -> Reply:
        self.plan = Plan(task)
        self.awaiting = ""
        if task != "book":
            self.plan.code = nlu.parse_code(said) or ""
        text = nlu.normalise(said)
        if task == "move":  # "my appointment on Monday, can I move it to Friday?": the new day
            text = text.rsplit(" to ", 1)[-1]
        self._absorb(text, said)
        if task == "book" and not (self.plan.service or self.plan.day or self.plan.time):
            return self._ask(BOOKING, "service", self._service_question())
        return self._next()

    def _continue(self, text: str, said: str) -> Reply | None:
        """The caller's words as an answer to the last question; None when they are not one."""
        plan = self.plan
        assert plan is not None
        if self.awaiting == "which":
            return self._choose_booking(text)
        if self.awaiting == "pick":
            if (slot := self._picked(text)) is not None:
                at = datetime.fromisoformat(slot)
                plan.day, plan.time, plan.part = at.date(), (at.hour, at.minute), None
                plan.forget_slot()
                plan.start = slot
                return self._next()
        changed = self._absorb(text, said)
        if changed - {"name", "phone"}:
            return self._next()  # a new wish: check the calendar again
        answer = nlu.parse_yes_no(text)
        if self.awaiting == "confirm":
            if changed:
                return self._next()  # read back again with the new name or number
            if nlu.wants_other_number(text):
                return self._ask("Of course. What number should I use?", "phone")
            if answer:
                return self._act()
            if answer is False and plan.task == "cancel":
                return self._drop("All right, I'll leave your appointment as it is.")
            if answer is False:
                plan.time = None
                plan.forget_slot()
                return self._ask("No problem. What day or time would suit you better?", "when")
            return None
        if self.awaiting == "pick" and answer is not None:
            if answer:
                return self._ask(f"Which one would you like: {self._options(plan.offers)}?", "pick")
            plan.time = None
            plan.forget_slot()
            return self._ask("All right. What other day or time would suit you?", "when")
        return self._next() if changed else None

    def _absorb(self, text: str, said: str) -> set[str]:
        """Take what the caller said about the appointment into the plan; the fields that changed."""
        plan = self.plan
        assert plan is not None
        changed: set[str] = set()
        if plan.task == "cancel":
            return changed
        service = nlu.find_service(text, self.profile)
        if plan.task == "book" and service is not None and service.name != plan.service:
            plan.service = service.name
            changed.add("service")
        day, at, part = nlu.parse_date(text, self.today), nlu.parse_time(text), nlu.parse_part_of_day(text)
        if day is not None and day != plan.day:
            plan.day = day
            changed.add("day")
        if at is not None and at != plan.time:
            plan.time, plan.part = at, None
            changed.add("time")
        elif at is None and part is not None and part != plan.part:
            plan.time, plan.part = None, part
            changed.add("time")
        if changed:
            plan.forget_slot()
        name = nlu.parse_name(said, expecting=self.awaiting == "name")
        if name and name != self.name and plan.task == "book":
            self.name = name
            changed.add("name")
        phone = nlu.parse_phone(said, expecting=self.awaiting == "phone")
        if phone and phone != self.phone:
            self.phone = phone
            changed.add("phone")
        return changed

    def _picked(self, text: str) -> str | None:
        """The offered slot the caller chose: 'the first one', '10:15', 'Wednesday', 'yes' to one."""
        offers = self.plan.offers if self.plan else []
        index = nlu.parse_choice(text)
        if index is not None and -len(offers) <= index < len(offers):
            return offers[index]
        at, day = nlu.parse_time(text), nlu.parse_date(text, self.today)
        if at is not None or day is not None:
            at_time = [s for s in offers if at is None or _same_clock(_clock(s), at)]
            on_date = [s for s in at_time if day is None or s[:10] == day.isoformat()]
            # "Monday" means the Monday offered, whichever week parse_date thought of
            on_weekday = [s for s in at_time
                          if day is not None and datetime.fromisoformat(s).weekday() == day.weekday()]
            for matches in (on_date, on_weekday):
                if len(matches) == 1:
                    return matches[0]
        if len(offers) == 1 and nlu.parse_yes_no(text):
            return offers[0]
        return None

    def _choose_booking(self, text: str) -> Reply | None:
        """Which of the caller's bookings: 'the second', 'the whitening', 'the one on Friday'."""
        bookings = (self.plan.bookings or []) if self.plan else []
        index = nlu.parse_choice(text)
        if index is not None and -len(bookings) <= index < len(bookings):
            return self._use_booking(bookings[index])
        service, day, at = (nlu.find_service(text, self.profile), nlu.parse_date(text, self.today),
                            nlu.parse_time(text))
        if service is None and day is None and at is None:
            return None
        matches = [b for b in bookings
                   if (service is None or str(b.get("service", "")).lower() == service.name.lower())
                   and (day is None or str(b.get("start", ""))[:10] == day.isoformat())
                   and (at is None or _is_start(b.get("start")) and _same_clock(_clock(str(b["start"])), at))]
        return self._use_booking(matches[0]) if len(matches) == 1 else None

    def _use_booking(self, booking: dict[str, Any]) -> Reply:
        plan = self.plan
        assert plan is not None
        plan.booking = booking
        plan.service = str(booking.get("service", ""))
        return self._next()

    # --- what comes next ------------------------------------------------------------------------

    def _next(self, news: str = "") -> Reply:
        """Ask for the first thing missing, check the calendar, or read back to confirm."""
        plan = self.plan
        assert plan is not None
        if plan.task != "book" and plan.booking is None:
            if plan.bookings is None and "find_bookings" in self.offered:
                return self._call("find_bookings", {"customer_phone": self.phone}, "Let me look that up.")
            mine = plan.bookings or []
            if plan.code:
                said = next((b for b in mine if str(b.get("code", "")).upper() == plan.code), None)
                return self._use_booking(said or {"code": plan.code})
            if len(mine) > 1:
                listed = _and([_booking_words(b) for b in mine])
                verb = "cancel" if plan.task == "cancel" else "move"
                return self._ask(f"I see {len(mine)} appointments: {listed}. "
                                 f"Which one would you like to {verb}?", "which")
            return self._use_booking(mine[0] if mine else {})
        if plan.task == "cancel":
            return self._ask(f"Shall I cancel {_booking_words(plan.booking or {}, 'your')}?", "confirm")
        if not plan.service:
            if plan.task == "book" and len(self.profile.services) == 1:
                plan.service = self.profile.services[0].name
            elif plan.task == "book":
                return self._ask(self._service_question(), "service")
        if plan.day is None:
            verb = "would suit you" if plan.task == "book" else "would you like to move it to"
            return self._ask(f"What day {verb}?", "when")
        if not plan.start and not plan.service:  # moving by code alone: no service to check
            if plan.time is None:
                return self._ask("What time would suit you?", "when")
            plan.start = f"{plan.day.isoformat()}T{plan.time[0]:02d}:{plan.time[1]:02d}"
        if not plan.start:
            args: dict[str, Any] = {"service": plan.service, "date": plan.day.isoformat()}
            if plan.time is not None:
                args["time"] = f"{plan.time[0]:02d}:{plan.time[1]:02d}"
            elif plan.part is not None:
                args["part_of_day"] = plan.part
            return self._call("check_availability", args, LET_ME_CHECK)
        if plan.task == "book" and not self.name:
            return self._ask(f"{news}May I have your name, please?", "name", "May I have your name, please?")
        return self._ask(self._read_back(), "confirm")

    def _read_back(self) -> str:
        plan = self.plan
        assert plan is not None
        when = spoken_datetime(_local(plan.start))
        if plan.task == "move":
            booking = plan.booking or {}
            since = f" from {booking['spoken_start']}" if booking.get("spoken_start") else ""
            what = f"your {booking['service']}" if booking.get("service") else "your appointment"
            return f"I'll move {what}{since} to {when}. Shall I go ahead?"
        number = f"the number ending in {self.phone[-3:]}" if self.phone else "the number you're calling from"
        return f"That's {_a(plan.service)} on {when} for {self.name}, and I'll use {number}. Shall I book it?"

    def _act(self) -> Reply:
        """The caller said yes: book, move or cancel."""
        plan = self.plan
        assert plan is not None
        if plan.task == "book":
            return self._call("book_appointment", {
                "service": plan.service, "start": plan.start, "customer_name": self.name,
                "customer_phone": self.phone}, "")
        booking = plan.booking or {}
        which = {"code": booking["code"]} if booking.get("code") else {"customer_phone": self.phone}
        if plan.task == "move":
            return self._call("reschedule_appointment", {"new_start": plan.start, **which}, "")
        return self._call("cancel_appointment", which, "")

    def _ask(self, text: str, awaiting: Awaiting, question: str = "") -> Reply:
        self.awaiting = awaiting
        self.question = question or text
        return text, None

    def _call(self, name: str, args: dict[str, Any], text: str) -> Reply:
        if name in self.offered:
            self.awaiting = ""  # the tool answers next, not the caller
            return text, (name, args)
        self.plan, self.awaiting = None, ""
        return f"I'm sorry, I can't do that over the phone right now. {OFFER_MESSAGE}", None

    def _drop(self, text: str) -> Reply:
        """The task is over (done or given up): say so and ask what else."""
        self.plan, self.awaiting = None, "more"
        return f"{text} {ANYTHING_ELSE}", None

    def _service_question(self) -> str:
        names = [s.name for s in self.profile.services]
        return f"Which service would you like? We offer {_and(names)}."

    def _planned_service(self) -> Service | None:
        name = self.plan.service if self.plan else ""
        return next((s for s in self.profile.services if s.name == name), None)

    def _on_one_day(self, starts: list[str]) -> bool:
        day = self.plan.day if self.plan else None
        return day is not None and all(s[:10] == day.isoformat() for s in starts)

    def _options(self, starts: list[str]) -> str:
        """Slots read out: just the times when all are on the day being discussed."""
        if self._on_one_day(starts):
            return _or([spoken_time(_local(s)) for s in starts])
        return _or([spoken_datetime(_local(s)) for s in starts])

    def _offer(self, starts: object, sorry: str) -> Reply:
        """Read out up to three free slots for the caller to pick from."""
        plan = self.plan
        assert plan is not None
        plan.forget_slot()
        plan.offers = sorted(s[:16] for s in (starts if isinstance(starts, list) else []) if _is_start(s))[:3]
        if not plan.offers:
            plan.time = None
            sorry = sorry or "I'm sorry, I don't have anything free around then."
            return self._ask(f"{sorry} What other day would suit you?", "when")
        lead = "I could do"
        if plan.day is not None and self._on_one_day(plan.offers):
            lead = f"On {spoken_day(plan.day)} I could do"
        ask = "Would one of those work?" if len(plan.offers) > 1 else "Would that work?"
        return self._ask(f"{sorry} {lead} {self._options(plan.offers)}. {ask}".strip(), "pick",
                         f"{lead} {self._options(plan.offers)}. {ask}")

    # --- a tool answered ------------------------------------------------------------------------

    def see(self, name: str, data: dict[str, Any]) -> Reply:
        """The line after a tool ran, in this brain's own words: from the result's data and a
        refusal's caller-worded `reason`, never its `note` (an instruction for a brain)."""
        ok = bool(data.get("ok"))
        if name == "end_call":
            return "", None
        if name == "transfer_to_human":
            if ok:
                return "Of course. I'm connecting you now, please hold.", None
            sorry = _sorry(data) if data.get("reason") else "I'm sorry, I can't put you through right now."
            return f"{sorry} {OFFER_MESSAGE}", None
        if name == "take_message":
            return self._message_taken(data)
        handler = {"check_availability": self._checked, "book_appointment": self._booked,
                   "find_bookings": self._found, "reschedule_appointment": self._moved,
                   "cancel_appointment": self._cancelled}.get(name)
        if handler is None:
            return "All right.", None
        if not ok and data.get("retryable"):
            return self._broke(data)
        if not ok and (reply := self._put_right(data)) is not None:
            return reply
        if not ok and self.plan is None:
            return self._drop(_sorry(data))
        return handler(data)

    def _message_taken(self, data: dict[str, Any]) -> Reply:
        if data.get("ok"):
            return self._drop("Thank you, I've passed your message on.")
        if data.get("ask") == "message":
            return f"Sorry, I didn't catch that. {PASS_ON}", None
        if data.get("retryable"):
            return f"{_sorry(data)} Let's try that once more. {PASS_ON}", None
        return self._drop(f"{_sorry(data)} Please call us back a little later.")

    def _broke(self, data: dict[str, Any]) -> Reply:
        """The tool broke (a fault, not a refusal): give up the task, as a receptionist would,
        and take a message instead."""
        self.plan, self.awaiting = None, ""
        if "take_message" in self.offered:
            return f"{_sorry(data)} {OFFER_MESSAGE}", None
        return self._drop(_sorry(data))

    def _put_right(self, data: dict[str, Any]) -> Reply | None:
        """A refusal the caller can put right (its `ask`): forget what was wrong and ask again."""
        plan, ask = self.plan, str(data.get("ask") or "")
        if plan is None or ask not in ASKED:
            return None
        sorry = ASKED[ask]
        if ask == "phone":
            return self._ask(f"{sorry} What number should I use?", "phone", "What number should I use?")
        if ask == "name":
            self.name = ""
        elif ask == "which":
            plan.booking = plan.bookings = None
        else:
            plan.forget_slot()
            plan.time = None
            if ask == "date":
                plan.day = None
        text, call = self._next()
        return f"{sorry} {text}".strip(), call

    def _checked(self, data: dict[str, Any]) -> Reply:
        plan = self.plan
        if plan is None or plan.task == "cancel":
            return "All right.", None
        if not data.get("ok"):
            return self._offer(data.get("alternatives"), _sorry(data))
        requested = str(data.get("requested") or "")
        if _is_start(requested) and data.get("requested_free"):
            plan.forget_slot()
            plan.start = requested[:16]
            return self._next(f"Good news, {spoken_datetime(_local(plan.start))} is free. ")
        if _is_start(requested):
            return self._offer(data.get("alternatives"), f"I'm sorry, {spoken_datetime(_local(requested))} is taken.")
        slots = data["slots"] if isinstance(data.get("slots"), list) else []
        if not slots and plan.day is not None:
            part = f" in the {plan.part}" if plan.part else ""
            return self._offer([], f"I'm sorry, there's nothing free on {spoken_day(plan.day)}{part}.")
        return self._offer(_spread(slots), "")

    def _booked(self, data: dict[str, Any]) -> Reply:
        if not data.get("ok"):
            return self._offer(data.get("alternatives"), _sorry(data))
        service = str(data.get("service") or (self.plan.service if self.plan else "") or "appointment")
        return self._drop(f"You're all set: {_a(service)} on {_when(data)}. "
                          f"Your confirmation code is {_spell(data.get('code'))}.")

    def _found(self, data: dict[str, Any]) -> Reply:
        plan = self.plan
        if plan is None or plan.task == "book":
            return "All right.", None
        if not data.get("ok"):
            return self._drop(_sorry(data))
        plan.bookings = [b for b in data.get("bookings") or [] if isinstance(b, dict)]
        if not plan.bookings and not plan.code:
            return self._drop("I couldn't find any upcoming appointments for the number you're calling from.")
        return self._next()

    def _moved(self, data: dict[str, Any]) -> Reply:
        if not data.get("ok"):
            return self._offer(data.get("alternatives"), _sorry(data))
        return self._drop(f"Done. Your appointment is now on {_when(data)}. "
                          f"Your confirmation code is {_spell(data.get('code'))}.")

    def _cancelled(self, data: dict[str, Any]) -> Reply:
        if not data.get("ok"):
            return self._drop(_sorry(data))
        return self._drop(f"Done. Your appointment on {_when(data)} is cancelled.")


def _asked_to_pass_on(history: list[Message]) -> bool:
    """Whether the assistant's last words, before the caller's reply, asked for a message."""
    for message in reversed(history[:-1]):
        if message.role == "assistant" and message.content.strip():
            return PASS_ON in message.content
        if message.role == "user":
            return False
    return False


def _tool_name(history: list[Message], call_id: str) -> str:
    for message in reversed(history):
        for call in message.tool_calls:
            if call.id == call_id:
                return call.name
    return ""


def _sorry(data: dict[str, Any]) -> str:
    """A refusal in this brain's words: a line for what is missing, else the tool's `reason`,
    which is worded for the caller. Never the `note`: that is an instruction, not a line."""
    ask = str(data.get("ask") or "")
    if ask in ASKED:
        return ASKED[ask]
    reason = str(data.get("reason") or "").strip().rstrip(".")
    return f"I'm sorry, {reason}." if reason else BROKE


def _result_data(message: Message) -> dict[str, Any]:
    try:
        data = json.loads(message.content or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _day_hours(profile: BusinessProfile, day: date, today: date) -> str:
    """One date's opening hours in words, from open_span: exceptions first, then the week."""
    when = f"on {spoken_day(day)}"
    if day == today:
        when = f"today, {spoken_day(day)}"
    elif (day - today).days == 1:
        when = f"tomorrow, {spoken_day(day)}"
    span = profile.open_span(day)
    if span is None:
        return f"We're closed {when}."
    special = " (special hours)" if day in profile.exceptions else ""
    return f"We're open {span.spoken()} {when}{special}."


def _service_sentence(service: Service) -> str:
    price = service.price.strip()
    if not price:
        cost = ""
    elif price.lower() == "free":
        cost = " and is free"
    else:
        cost = f" and costs {price}"
    return f"A {service.name.lower()} takes {service.duration_min} minutes{cost}."


# --- saying times and lists -------------------------------------------------------------------

def _is_start(value: object) -> bool:
    try:
        datetime.fromisoformat(str(value)[:16])
    except ValueError:
        return False
    return len(str(value)) >= 16


def _local(start: str) -> datetime:
    """A tool's ISO start as the business's wall-clock time it names (the offset dropped)."""
    return datetime.fromisoformat(start[:16])


def _clock(start: str) -> tuple[int, int]:
    at = _local(start)
    return at.hour, at.minute


def _same_clock(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """'3:15' heard as 15:15 still matches an offered 3:15 am, and the other way round."""
    return (a[0] % 12, a[1]) == (b[0] % 12, b[1])


def _when(data: dict[str, Any]) -> str:
    """A tool result's time as said: its own spoken form, else read from the ISO start."""
    if data.get("spoken_start"):
        return str(data["spoken_start"])
    return spoken_datetime(_local(str(data["start"]))) if _is_start(data.get("start")) else "the time we agreed"


def _booking_words(booking: dict[str, Any], article: str = "") -> str:
    service = str(booking.get("service") or "")
    if not service:
        what = "your appointment"
    else:
        what = f"{article} {service}" if article else _a(service)
    if booking.get("spoken_start") or _is_start(booking.get("start")):
        return f"{what} on {_when(booking)}"
    return f"{what} with the code {_spell(booking['code'])}" if booking.get("code") else what


def _spread(slots: list[Any]) -> list[Any]:
    """Three slots across the list (first, middle, last), so the caller hears the range."""
    return slots if len(slots) <= 3 else [slots[0], slots[len(slots) // 2], slots[-1]]


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _or(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _spell(code: object) -> str:
    """A confirmation code read out one character at a time: 'A B C 1 2 3'."""
    return " ".join(str(code or "").upper().replace(" ", ""))
