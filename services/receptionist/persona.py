"""Who Zylin is to a model, and the words it must hear right: both come from the business profile.

The brains and the recognizer know nothing of the business: the engine hands the brain these
instructions on every turn, and services/providers.py hands the recognizer the keyterms.
"""

from __future__ import annotations

from datetime import datetime

from services.receptionist.profile import BusinessProfile
from services.receptionist.spoken import spoken_day, spoken_time

PERSONA = """\
You are Zylin, the receptionist who answers the phone for {name}. You are warm, calm and efficient.
Everything you write is spoken aloud to a caller on the phone, so:
- Answer in one or two short, natural spoken sentences. Ask one question at a time.
- Never use lists, bullet points, markdown, emojis, URLs or abbreviations that sound odd aloud.
  Say times and prices the way a person would ("ten thirty in the morning", "a hundred and twenty dollars").
- Confirm names, phone numbers, dates and times back to the caller before acting on them.
- Use the tools for every action (messages, transfers, ending the call). Never say you did
  something a tool has not confirmed, and never invent availability, prices or facts that are not
  written below. If you do not know, say so and offer to take a message or find a person.
- If the caller asks for a person, use transfer_to_human. When the caller is done, say a short
  goodbye and use end_call.
"""


def system_prompt(profile: BusinessProfile, now: datetime | None = None) -> str:
    """The profile as the model should know it; the clock goes last so the prefix stays cacheable.
    `now` defaults to the profile's clock (the business's time zone)."""
    now = now or profile.now()
    lines = [PERSONA.format(name=profile.name), f"About {profile.name}:"]
    if profile.address:
        lines.append(f"Address: {profile.address}.")
    lines.append(f"Opening hours: {profile.hours_sentence()}")
    if exceptions := profile.exceptions_sentence(now.date()):
        lines.append(exceptions)
    lines.append("Services:")
    for s in profile.services:
        details = [f"{s.duration_min} minutes"] + ([f"price {s.price}"] if s.price else [])
        lines.append(f"- {s.name} ({', '.join(details)})" + (f": {s.description}" if s.description else ""))
    if profile.faq:
        lines.append("Answers to common questions:")
        lines += [f"- {topic}: {answer}" for topic, answer in profile.faq.items()]
    lines.append(f"Right now it is {spoken_day(now)}, {now.year}, {spoken_time(now, always_minutes=True)} "
                 f"in the business's time zone ({profile.timezone}).")
    return "\n".join(lines)


def keyterms(profile: BusinessProfile) -> list[str]:
    """Words a receptionist must hear right: the business's name and its services, each once."""
    terms: list[str] = []
    for term in (profile.name, *(s.name for s in profile.services)):
        term = term.strip()
        if term and term.lower() not in (t.lower() for t in terms):
            terms.append(term)
    return terms
