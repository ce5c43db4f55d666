"""What Zylin says on its own, with no brain involved: fallbacks, prompts, goodbyes, apologies.

One place for the owner of the words to read and change them; the live engine, record mode, the
speaker and the offline brain all say them from here.
"""

from __future__ import annotations

# --- offering a message -------------------------------------------------------------------------
PASS_ON = "What would you like me to pass on?"  # the offline brain takes the caller's next words as the message
OFFER_MESSAGE = f"I can take a message for the team. {PASS_ON}"
TAKE_A_MESSAGE = f"I can take a message and make sure the team gets back to you. {PASS_ON}"

# --- something failed ---------------------------------------------------------------------------
FALLBACK_LINE = ("I'm sorry, I'm having trouble on my end right now. I can take a message, "
                 "or put you through to someone. Which would you prefer?")   # the brain failed
ASR_DOWN_LINE = ("I'm sorry, I'm having trouble hearing you right now. Please press zero to reach "
                 "a person, or call back in a few minutes.")
TRANSFER_FAILED_LINE = f"I'm sorry, I couldn't connect you. {TAKE_A_MESSAGE}"  # the REST transfer failed
APOLOGY_LINE = "Sorry, I'm having trouble speaking right now."  # pre-rendered: when no voice can speak
ONE_MOMENT = "One moment, please."  # a tool is slow (TOOL_ONE_MOMENT_S): the caller hears why it is quiet

# --- said around the work -------------------------------------------------------------------------
LET_ME_CHECK = "Let me check."       # before looking up availability
ANYTHING_ELSE = "Is there anything else I can help with?"


def not_put_through(why: str) -> str:
    """Back from a <Dial> nobody took (`why`: telephony.webhook.DIAL_FAILED's words): say so, offer a message."""
    return f"I'm sorry, I couldn't put you through: {why}. {TAKE_A_MESSAGE}"


# --- silence and limits (live calls) --------------------------------------------------------------
IDLE_PROMPT = "Are you still there?"
IDLE_GOODBYE = "I haven't heard anything, so I'll end the call now. Feel free to call back. Goodbye!"
MAX_DURATION_GOODBYE = "I'm sorry, we've reached the time limit for this call. Please call back anytime. Goodbye!"

# --- record mode --------------------------------------------------------------------------------
REPROMPT = "Sorry, I didn't catch that. Could you say it again?"
MESSAGE_OFFER = f"I'm sorry, I'm having trouble hearing you. {OFFER_MESSAGE}"
NOT_HEARD_GOODBYE = "I'm sorry, I still can't hear you. Please call back in a little while. Goodbye!"
TOO_SLOW = "I'm sorry, that took me too long. Could you say that again?"

# --- a demo line without speech recognition (the mock recognizer, no script) -----------------------
DEMO_NOTICE = ("This line is running in demo mode without speech recognition, so I can't understand "
               "what you say. To talk with me, the owner needs to set a Deepgram key.")
DEMO_REMINDER = "Sorry, I still can't understand you: this demo line has no speech recognition."

# --- not said: what the brain is told the caller did ----------------------------------------------
DTMF_PERSON = "[The caller pressed 0: they want to speak to a person.]"


# The lines said word for word often enough to pre-render in the call's voice (the phrase cache,
# with the business's greeting): their audio goes out within a few ms of being needed.
PHRASES = (LET_ME_CHECK, ANYTHING_ELSE, ONE_MOMENT, IDLE_PROMPT, IDLE_GOODBYE, MAX_DURATION_GOODBYE,
           FALLBACK_LINE, ASR_DOWN_LINE, TRANSFER_FAILED_LINE, PASS_ON)
