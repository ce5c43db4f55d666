"""The receptionist's tools: hanging up, putting the caller through, and taking a message; and the
Toolbox that reads a call's arguments with each tool's model before the tool runs."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import datetime
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from services.llm.base import ToolCall
from services.receptionist import refusals, tools
from services.receptionist.profile import BusinessProfile, parse_profile
from services.receptionist.tool_args import CheckAvailability, EndCall, TakeMessage, TransferToHuman
from services.receptionist.tool_types import CallAction, CallContext, ToolResult
from services.receptionist.tools import Toolbox

OWNER = "+15551230000"
CALLER = "+15559876543"
ALL_WEEK = {day: "00:00-23:59" for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def profile(**changes) -> BusinessProfile:
    data = {
        "name": "Bright Smile Dental",
        "timezone": "America/New_York",
        "hours": {"mon": "09:00-17:00", "wed": "09:00-17:00"},
        "services": [{"name": "Cleaning", "duration_min": 45}],
        "owner_phone": OWNER,
    }
    data.update(changes)
    return parse_profile(data)


@pytest.fixture(autouse=True)
def wednesday_noon(monkeypatch: pytest.MonkeyPatch) -> None:
    """The business clock reads a fixed Wednesday noon, so transfer hours are deterministic."""
    monkeypatch.setattr(BusinessProfile, "now",
                        lambda self: datetime(2025, 1, 15, 12, 0, tzinfo=ZoneInfo(self.timezone)))


def context(p: BusinessProfile | None = None, can_transfer: bool = True) -> CallContext:
    return CallContext(call_sid="CA123", caller_phone=CALLER,
                       profile=p or profile(transfer_hours=ALL_WEEK), can_transfer=can_transfer)


def call(tool: str, /, **arguments) -> ToolCall:
    return ToolCall(id=f"call_{tool}", name=tool, arguments=arguments)


# --- end_call ---------------------------------------------------------------------------------

async def test_end_call_asks_for_a_goodbye_then_ends_the_call() -> None:
    result = await tools.end_call(context(), EndCall(reason="caller is done"))
    assert result.data["ok"] is True
    assert result.action == CallAction("end_call", reason="caller is done")


# --- transfer_to_human -----------------------------------------------------------------------

async def test_transfer_dials_the_owner_when_someone_can_take_the_call() -> None:
    result = await tools.transfer_to_human(context(), TransferToHuman(reason="billing question"))
    assert result.data["ok"] is True
    assert result.action == CallAction("transfer", reason="billing question", target=OWNER)


async def test_transfer_is_declined_without_an_owner_number() -> None:
    result = await tools.transfer_to_human(
        context(profile(transfer_hours=ALL_WEEK, owner_phone="")), TransferToHuman(reason="x"))
    assert result.data["ok"] is False
    assert result.data["reason"]
    assert result.action is None


async def test_transfer_is_declined_when_this_line_cannot_transfer() -> None:
    result = await tools.transfer_to_human(context(can_transfer=False), TransferToHuman(reason="x"))
    assert result.data["ok"] is False
    assert result.data["reason"]
    assert result.action is None


async def test_transfer_is_declined_when_no_transfer_hours_are_set() -> None:
    result = await tools.transfer_to_human(context(profile(transfer_hours={})), TransferToHuman(reason="x"))
    assert result.data["ok"] is False
    assert "outside the hours" in result.data["reason"]
    assert result.action is None


async def test_transfer_is_declined_outside_transfer_hours(monkeypatch: pytest.MonkeyPatch) -> None:
    business_hours = profile()  # transfer hours default to Mon and Wed 09:00-17:00
    assert (await tools.transfer_to_human(context(business_hours), TransferToHuman())).action is not None
    monkeypatch.setattr(BusinessProfile, "now",
                        lambda self: datetime(2025, 1, 15, 3, 0, tzinfo=ZoneInfo(self.timezone)))
    result = await tools.transfer_to_human(context(business_hours), TransferToHuman(reason="x"))
    assert result.data["ok"] is False
    assert "outside the hours" in result.data["reason"]
    assert result.action is None


# --- take_message -------------------------------------------------------------------------------

async def test_a_message_is_stored_with_the_callers_number_by_default() -> None:
    ctx = context()
    result = await tools.take_message(ctx, TakeMessage(name="Ann", message="  Please call me back.  "))
    assert result.data["ok"] is True
    assert result.action is None
    assert ctx.messages == [{"name": "Ann", "phone": CALLER, "message": "Please call me back.",
                             "urgency": "normal"}]


async def test_a_message_keeps_a_callback_number_the_caller_gave() -> None:
    ctx = context()
    await tools.take_message(ctx, TakeMessage(message="Running late", phone="+15550001111", urgency="urgent"))
    assert ctx.messages[0]["phone"] == "+15550001111"
    assert ctx.messages[0]["urgency"] == "urgent"


@pytest.mark.parametrize("args", [{}, {"message": ""}, {"message": "   "}, {"message": None}])
async def test_an_empty_message_is_refused_and_not_stored(args: dict) -> None:
    ctx = context()
    result = await Toolbox(ctx).run(call("take_message", **args))
    assert result.data["ok"] is False
    assert "empty" in result.data["reason"]
    assert result.data["ask"] == "message"
    assert ctx.messages == []


# --- Toolbox ---------------------------------------------------------------------------------------

async def test_an_unknown_tool_is_reported_not_raised() -> None:
    result = await Toolbox(context()).run(call("book_flight", to="Paris"))
    assert result.data["ok"] is False
    assert "book_flight" in result.data["reason"]


async def test_a_repeated_identical_call_returns_the_first_result_without_repeating_it() -> None:
    ctx = context()
    box = Toolbox(ctx)
    first = await box.run(call("take_message", message="Call me", name="Bo"))
    again = await box.run(ToolCall(id="call_other", name="take_message",
                                   arguments={"name": "Bo", "message": "Call me"}))
    assert again is first
    assert len(ctx.messages) == 1


async def test_a_different_call_to_the_same_tool_runs_again() -> None:
    ctx = context()
    box = Toolbox(ctx)
    await box.run(call("take_message", message="Call me"))
    await box.run(call("take_message", message="Actually, text me"))
    assert [m["message"] for m in ctx.messages] == ["Call me", "Actually, text me"]


async def test_a_tool_that_raises_yields_a_failed_result_and_the_call_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = []

    async def broken(ctx: CallContext, args: EndCall) -> ToolResult:
        attempts.append(args)
        raise RuntimeError("database is down")

    monkeypatch.setitem(tools.TOOLS, "end_call", replace(tools.TOOLS["end_call"], handler=broken))
    box = Toolbox(context())
    result = await box.run(call("end_call"))
    assert result.data["ok"] is False
    assert result.action is None
    await box.run(call("end_call"))
    assert len(attempts) == 2  # a failure is not remembered as the answer


async def test_the_toolbox_runs_the_real_tools_by_name() -> None:
    box = Toolbox(context())
    assert (await box.run(call("end_call"))).action == CallAction("end_call")
    transfer = await box.run(call("transfer_to_human", reason="wants a person"))
    assert transfer.action == CallAction("transfer", reason="wants a person", target=OWNER)


def test_specs_describe_each_tool_as_a_json_schema_object() -> None:
    specs = Toolbox(context()).specs
    assert {s.name for s in specs} == {"end_call", "transfer_to_human", "take_message"}
    for spec in specs:
        assert spec.description
        schema = json.loads(json.dumps(spec.parameters))  # plain JSON, sendable to a model
        assert schema["type"] == "object"
        assert isinstance(schema["properties"], dict)
        assert set(schema.get("required", [])) <= set(schema["properties"])
        assert all("type" in prop for prop in schema["properties"].values())
    take = next(s for s in specs if s.name == "take_message")
    assert take.parameters["required"] == ["message"]


# --- the arguments: schemas from the models, read once before a tool runs -------------------------

TWO_SERVICES = [{"name": "Cleaning", "duration_min": 45}, {"name": "Whitening", "duration_min": 30}]
LOCAL_TIME = {"type": "string", "description": "business local time, YYYY-MM-DDTHH:MM"}
OWN_NUMBER = {"type": "string", "description": "empty = the number calling"}
CODE = {"type": "string", "description": "confirmation code, if the caller has it"}
TEXT = {"type": "string"}
# What the brain was given when the schemas were written by hand: the generated ones say the same.
SCHEMAS = {
    "check_availability": {"type": "object", "properties": {
        "service": {"type": "string", "enum": ["Cleaning", "Whitening"]},
        "date": {"type": "string", "description": "YYYY-MM-DD"},
        "time": {"type": "string", "description": "HH:MM the caller asked for"},
        "part_of_day": {"type": "string", "enum": ["morning", "afternoon", "evening"]}},
        "required": ["service", "date"]},
    "book_appointment": {"type": "object", "properties": {
        "service": {"type": "string", "enum": ["Cleaning", "Whitening"]}, "start": LOCAL_TIME,
        "customer_name": TEXT, "customer_phone": OWN_NUMBER},
        "required": ["service", "start", "customer_name"]},
    "find_bookings": {"type": "object", "properties": {"customer_phone": OWN_NUMBER}, "required": []},
    "reschedule_appointment": {"type": "object", "properties": {
        "new_start": LOCAL_TIME, "code": CODE, "customer_phone": OWN_NUMBER}, "required": ["new_start"]},
    "cancel_appointment": {"type": "object", "properties": {"code": CODE, "customer_phone": OWN_NUMBER},
                           "required": []},
    "take_message": {"type": "object", "properties": {
        "name": TEXT, "phone": TEXT, "message": TEXT,
        "urgency": {"type": "string", "enum": ["low", "normal", "urgent"]}}, "required": ["message"]},
    "transfer_to_human": {"type": "object", "properties": {"reason": TEXT}, "required": ["reason"]},
    "end_call": {"type": "object", "properties": {"reason": TEXT}, "required": []},
}


def with_storage(p: BusinessProfile | None = None) -> CallContext:
    """A call on which the booking tools are offered; their handlers are replaced, so nothing is stored."""
    return CallContext(call_sid="CA123", caller_phone=CALLER, profile=p or profile(services=TWO_SERVICES),
                       can_transfer=True, storage=SimpleNamespace())


@pytest.fixture
def handled(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    """Every tool's handler replaced by one that keeps the arguments it was given."""
    seen: list[tuple[str, object]] = []
    for name, tool in tools.TOOLS.items():
        async def keep(ctx: CallContext, args: object, name: str = name) -> ToolResult:
            seen.append((name, args))
            return ToolResult({"ok": True})
        monkeypatch.setitem(tools.TOOLS, name, replace(tool, handler=keep))
    return seen


def test_each_schema_is_generated_from_the_tool_s_model_with_the_business_s_services() -> None:
    specs = tools.tool_specs(profile(services=TWO_SERVICES))
    assert {name: spec.parameters for name, spec in specs.items()} == SCHEMAS
    assert "title" not in json.dumps(SCHEMAS)  # compact: nothing the brain does not need
    other = tools.tool_specs(profile(services=[{"name": "Root canal", "duration_min": 90}]))
    assert other["book_appointment"].parameters["properties"]["service"]["enum"] == ["Root canal"]
    assert specs["book_appointment"].parameters["properties"]["service"]["enum"] == ["Cleaning", "Whitening"]


@pytest.mark.parametrize("tool, arguments, reason, ask", [
    ("book_appointment", {"service": "Cleaning", "start": "2025-01-20T10:00"}, refusals.NO_NAME, "name"),
    ("book_appointment", {"service": "Cleaning", "start": "2025-01-20T10:00", "customer_name": ["Ann"]},
     refusals.NO_NAME, "name"),
    ("book_appointment", {"service": "Cleaning", "customer_name": "Ann"}, refusals.UNREADABLE_TIME, "time"),
    ("check_availability", {"service": "Cleaning"}, refusals.UNREADABLE_DATE, "date"),
    ("check_availability", {"service": "Cleaning", "date": {"day": 20}}, refusals.UNREADABLE_DATE, "date"),
    ("reschedule_appointment", {"code": "ABCDEF"}, refusals.UNREADABLE_TIME, "time"),
    ("take_message", {"name": "Ann"}, refusals.EMPTY_MESSAGE, "message"),
], ids=["missing-name", "name-not-text", "missing-start", "missing-date", "date-not-text", "missing-new-start",
        "missing-message"])
async def test_arguments_the_caller_can_put_right_are_refused_with_what_to_ask_and_no_tool_runs(
        handled, tool: str, arguments: dict, reason: str, ask: str) -> None:
    result = await Toolbox(with_storage()).run(call(tool, **arguments))
    assert result.data["ok"] is False
    assert result.data["reason"] == reason and result.data["ask"] == ask and result.data["note"]
    assert not result.data.get("retryable") and result.action is None
    assert handled == []


async def test_a_missing_service_is_refused_as_a_service_not_offered_with_the_ones_that_are(handled) -> None:
    result = await Toolbox(with_storage()).run(call("check_availability", date="2025-01-20"))
    assert result.data == {"ok": False, "reason": "we don't offer that service",
                           "services": ["Cleaning", "Whitening"]}
    assert handled == []


@pytest.mark.parametrize("tool, arguments, wrong", [
    ("check_availability", {"service": "Cleaning", "date": "2025-01-20", "part_of_day": "night"}, "part_of_day"),
    ("take_message", {"message": "Call me", "urgency": "whenever"}, "urgency"),
    ("end_call", {"reason": True}, "reason"),
], ids=["part-of-day-not-offered", "urgency-not-offered", "reason-not-text"])
async def test_an_argument_the_caller_cannot_put_right_is_a_failure_they_can_hear_and_the_brain_can_fix(
        handled, tool: str, arguments: dict, wrong: str) -> None:
    result = await Toolbox(with_storage()).run(call(tool, **arguments))
    assert result.data["ok"] is False and result.action is None
    assert result.data["reason"] == "something went wrong on my side"  # said as it is: no field names
    assert "ask" not in result.data and not result.data.get("retryable")
    assert repr(wrong) in result.data["note"]  # the brain is told which argument to send again
    assert handled == []


async def test_arguments_that_cannot_be_read_are_logged_by_name_never_by_what_was_sent(
        handled, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="zylin")
    await Toolbox(with_storage()).run(call("take_message", message="my sister Ruth", urgency="Ruth says asap"))
    await Toolbox(with_storage()).run(call("book_appointment", service="Cleaning", start="2025-01-20T10:00",
                                           customer_name={"first": "Ruth"}))
    assert "urgency" in caplog.text and "customer_name" in caplog.text
    assert "Ruth" not in caplog.text


async def test_arguments_no_tool_has_are_ignored(handled) -> None:
    box = Toolbox(with_storage())
    result = await box.run(call("check_availability", service="Cleaning", date="2025-01-20", mood="cheerful"))
    assert result.data == {"ok": True}
    [(name, args)] = handled
    assert name == "check_availability"
    assert args == CheckAvailability(service="Cleaning", date="2025-01-20")


async def test_a_repeat_with_an_argument_no_tool_has_is_the_same_call_and_runs_once() -> None:
    ctx = context()
    box = Toolbox(ctx)
    first = await box.run(call("take_message", message="Call me", name="Bo", mood="cheerful"))
    again = await box.run(call("take_message", message="Call me ", name="Bo", phone=""))
    assert first.data["ok"] is True and again is first
    assert ctx.messages == [{"name": "Bo", "phone": CALLER, "message": "Call me", "urgency": "normal"}]


def test_arguments_are_read_as_leniently_as_a_model_sends_them() -> None:
    read = CheckAvailability.model_validate({"service": " Cleaning ", "date": 20250120, "time": "",
                                             "part_of_day": "Morning"})
    assert read == CheckAvailability(service="Cleaning", date="20250120", time="", part_of_day="morning")
    message = TakeMessage.model_validate({"message": "Hi", "phone": 5551234, "urgency": "", "name": None})
    assert (message.phone, message.urgency, message.name) == ("5551234", "normal", "")
    assert TransferToHuman.model_validate({}).reason == "caller asked for a person"
