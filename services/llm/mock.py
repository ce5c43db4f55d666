"""An offline stand-in for the LLM: keyword rules over the same history, tools and streaming shape.

It answers from the business profile and calls the receptionist's tools like the real model
would, so the orchestrator's tool loop, streaming and follow-ups run unchanged without a network.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from services.llm.base import BrainOutput, Message, TextDelta, ToolCall, ToolSpec
from services.receptionist.profile import BusinessProfile, Service

PASS_ON = "What would you like me to pass on?"
OFFER_MESSAGE = f"I can take a message for the team. {PASS_ON}"
BOOKING = ("I'd be happy to help you book an appointment. "
           "Which service would you like, and what day and time suit you?")
GREETING = "Hello! How can I help you today?"
FALLBACK = ("Sorry, I can help with our hours, services and prices, booking an appointment, "
            "or taking a message. What would you like to do?")

_BYE = re.compile(r"\b(bye|goodbye)\b|\bthat(?:'s| is) all\b")
_HUMAN = re.compile(r"\b(human|manager|person|someone|operator)\b|pressed 0")
_HOURS = re.compile(r"\b(hours?|open\w*|clos\w*)\b")
_PRICES = re.compile(r"\b(services?|prices?|cost\w*|offer\w*)\b|how much")
_BOOK = re.compile(r"\b(book\w*|appointments?|schedul\w*)\b")
_ADDRESS = re.compile(r"\b(address|located|location)\b|where are you")
Call = tuple[str, dict[str, Any]]  # a tool name and its arguments
_GREETING_WORDS = {"hi", "hello", "hey", "hiya", "good", "morning", "afternoon", "evening", "there"}


class MockBrain:
    """A Brain that follows fixed rules: predictable conversations for tests, demos and benchmarks."""

    def __init__(self, profile: BusinessProfile, delay_ms: float = 0.0) -> None:
        self.profile = profile
        self.delay_s = delay_ms / 1000
        self._ids = itertools.count(1)

    async def respond(self, history: list[Message], tools: list[ToolSpec]) -> AsyncIterator[BrainOutput]:
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

    # --- rules ----------------------------------------------------------------------------

    def _decide(self, history: list[Message], offered: set[str]) -> tuple[str, Call | None]:
        if not history:
            return self.profile.greeting, None
        last = history[-1]
        if last.role == "tool":
            return self._follow_up(last, history), None
        if last.role == "user":
            return self._answer(last.content, _asked_to_pass_on(history), offered)
        if last.role == "system":
            return self.profile.greeting, None
        return "", None  # the assistant already spoke last: nothing to add

    def _follow_up(self, result: Message, history: list[Message]) -> str:
        """The line after a tool ran, from the tool's result data."""
        name = result.name or _tool_name(history, result.tool_call_id)
        try:
            data = json.loads(result.content or "{}")
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        ok = bool(data.get("ok"))
        if name == "end_call":
            return ""
        if name == "transfer_to_human":
            if ok:
                return "Of course. I'm connecting you now, please hold."
            reason = str(data.get("reason") or "no one is available right now")
            return f"I'm sorry, {reason}. {OFFER_MESSAGE}"
        if name == "take_message":
            if ok:
                return "Thank you, I've passed your message on. Is there anything else I can help with?"
            return f"Sorry, I didn't catch that. {PASS_ON}"
        return "All right."

    def _answer(self, said: str, passing_on: bool, offered: set[str]) -> tuple[str, Call | None]:
        text = said.lower().replace("\u2019", "'")
        if _BYE.search(text):
            goodbye = f"Thanks for calling {self.profile.name}. Goodbye!"
            if "end_call" in offered:
                return goodbye, ("end_call", {"reason": "caller said goodbye"})
            return goodbye, None
        # A caller answering "what should I pass on?" is dictating, even if they say "manager".
        if passing_on and said.strip():
            if "take_message" in offered:
                return "", ("take_message", {"message": said.strip(), "phone": ""})
            return "Sorry, I can't take messages right now. Please call back during our opening hours.", None
        if _HUMAN.search(text):
            if "transfer_to_human" in offered:
                return "", ("transfer_to_human", {"reason": "caller asked for a person"})
            return f"I'm sorry, I can't put you through right now. {OFFER_MESSAGE}", None
        if _HOURS.search(text):
            return self.profile.hours_sentence(), None
        if _PRICES.search(text):
            service = self.profile.find_service(said)
            return (_service_sentence(service) if service else self.profile.services_sentence()), None
        for key, answer in self.profile.faq.items():
            if re.search(rf"\b{re.escape(key.lower())}\b", text):
                return answer, None
        if self.profile.address and _ADDRESS.search(text):
            return f"We're at {self.profile.address}.", None
        if _BOOK.search(text):
            return BOOKING, None
        words = re.findall(r"[a-z']+", text)
        if words and all(word in _GREETING_WORDS for word in words):
            return GREETING, None
        return FALLBACK, None


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


def _service_sentence(service: Service) -> str:
    price = service.price.strip()
    if not price:
        cost = ""
    elif price.lower() == "free":
        cost = " and is free"
    else:
        cost = f" and costs {price}"
    return f"A {service.name.lower()} takes {service.duration_min} minutes{cost}."
