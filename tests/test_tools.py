"""The receptionist's tools: hanging up, putting the caller through, and taking a message."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from services.llm.base import ToolCall
from services.receptionist import tools
from services.receptionist.profile import BusinessProfile, parse_profile
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
    result = await tools.end_call(context(), {"reason": "caller is done"})
    assert result.data["ok"] is True
    assert result.action == CallAction("end_call", reason="caller is done")


# --- transfer_to_human -----------------------------------------------------------------------

async def test_transfer_dials_the_owner_when_someone_can_take_the_call() -> None:
    result = await tools.transfer_to_human(context(), {"reason": "billing question"})
    assert result.data["ok"] is True
    assert result.action == CallAction("transfer", reason="billing question", target=OWNER)


async def test_transfer_is_declined_without_an_owner_number() -> None:
    result = await tools.transfer_to_human(
        context(profile(transfer_hours=ALL_WEEK, owner_phone="")), {"reason": "x"})
    assert result.data["ok"] is False
    assert result.data["reason"]
    assert result.action is None


async def test_transfer_is_declined_when_this_line_cannot_transfer() -> None:
    result = await tools.transfer_to_human(context(can_transfer=False), {"reason": "x"})
    assert result.data["ok"] is False
    assert result.data["reason"]
    assert result.action is None


async def test_transfer_is_declined_when_no_transfer_hours_are_set() -> None:
    result = await tools.transfer_to_human(context(profile(transfer_hours={})), {"reason": "x"})
    assert result.data["ok"] is False
    assert "outside the hours" in result.data["reason"]
    assert result.action is None


async def test_transfer_is_declined_outside_transfer_hours(monkeypatch: pytest.MonkeyPatch) -> None:
    business_hours = profile()  # transfer hours default to Mon and Wed 09:00-17:00
    assert (await tools.transfer_to_human(context(business_hours), {})).action is not None
    monkeypatch.setattr(BusinessProfile, "now",
                        lambda self: datetime(2025, 1, 15, 3, 0, tzinfo=ZoneInfo(self.timezone)))
    result = await tools.transfer_to_human(context(business_hours), {"reason": "x"})
    assert result.data["ok"] is False
    assert "outside the hours" in result.data["reason"]
    assert result.action is None


# --- take_message -------------------------------------------------------------------------------

async def test_a_message_is_stored_with_the_callers_number_by_default() -> None:
    ctx = context()
    result = await tools.take_message(ctx, {"name": "Ann", "message": "  Please call me back.  "})
    assert result.data["ok"] is True
    assert result.action is None
    assert ctx.messages == [{"name": "Ann", "phone": CALLER, "message": "Please call me back.",
                             "urgency": "normal"}]


async def test_a_message_keeps_a_callback_number_the_caller_gave() -> None:
    ctx = context()
    await tools.take_message(ctx, {"message": "Running late", "phone": "+15550001111",
                                   "urgency": "urgent"})
    assert ctx.messages[0]["phone"] == "+15550001111"
    assert ctx.messages[0]["urgency"] == "urgent"


@pytest.mark.parametrize("args", [{}, {"message": ""}, {"message": "   "}])
async def test_an_empty_message_is_refused_and_not_stored(args: dict) -> None:
    ctx = context()
    result = await tools.take_message(ctx, args)
    assert result.data["ok"] is False
    assert "empty" in result.data["reason"]
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

    async def broken(ctx: CallContext, args: dict) -> ToolResult:
        attempts.append(args)
        raise RuntimeError("database is down")

    monkeypatch.setitem(tools.HANDLERS, "end_call", broken)
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
