"""The tools' arguments: one pydantic model per tool. The JSON schema a model is given for a tool
is generated from its model (`parameters`), and what the model sends is read by it once, in
Toolbox.run, before the tool runs: a tool gets its arguments typed, never a raw dict.

Reading is as lenient as models need: a number sent for text is taken as text, an empty string or
null is an argument not given, text loses its surrounding spaces, a choice ignores case, and an
argument the tool does not have is ignored. What still cannot be read becomes a refusal the
receptionist can say (`unreadable`), never an error.
"""

from __future__ import annotations

import copy
import functools
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from services.receptionist import refusals
from services.receptionist.refusals import refuse
from services.receptionist.tool_types import ToolResult

LOCAL_TIME = "business local time, YYYY-MM-DDTHH:MM"
OWN_NUMBER = "empty = the number calling"
CODE = "confirmation code, if the caller has it"


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


PartOfDay = Annotated[Literal["morning", "afternoon", "evening"], BeforeValidator(_lower)]
Urgency = Annotated[Literal["low", "normal", "urgent"], BeforeValidator(_lower)]


class ToolArgs(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _given(cls, data: Any) -> Any:
        """Only the arguments given: an empty string or null is one the model left out."""
        if not isinstance(data, dict):
            return data
        given = {}
        for name, value in data.items():
            if isinstance(value, str):
                value = value.strip()
            if value is not None and value != "":
                given[name] = value
        return given


class CheckAvailability(ToolArgs):
    service: str
    date: str = Field(description="YYYY-MM-DD")
    time: str = Field("", description="HH:MM the caller asked for")
    part_of_day: PartOfDay | None = None


class BookAppointment(ToolArgs):
    service: str
    start: str = Field(description=LOCAL_TIME)
    customer_name: str
    customer_phone: str = Field("", description=OWN_NUMBER)


class FindBookings(ToolArgs):
    customer_phone: str = Field("", description=OWN_NUMBER)


class RescheduleAppointment(ToolArgs):
    new_start: str = Field(description=LOCAL_TIME)
    code: str = Field("", description=CODE)
    customer_phone: str = Field("", description=OWN_NUMBER)


class CancelAppointment(ToolArgs):
    code: str = Field("", description=CODE)
    customer_phone: str = Field("", description=OWN_NUMBER)


class TakeMessage(ToolArgs):
    name: str = ""
    phone: str = ""
    message: str
    urgency: Urgency = "normal"


class TransferToHuman(ToolArgs):
    # Asked for, so the team hears why; a transfer the model sends without one still goes through.
    model_config = ConfigDict(json_schema_extra={"required": ["reason"]})

    reason: str = "caller asked for a person"


class EndCall(ToolArgs):
    reason: str = ""


class _Compact(GenerateJsonSchema):
    """The schema a model needs and no more: no titles or defaults, and an optional argument as
    its own type (null reads as not given, so there is no need to offer it)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        json_schema = super().model_schema(schema)
        json_schema.pop("title", None)
        json_schema.pop("description", None)  # a tool's description is its ToolSpec's
        json_schema.setdefault("required", [])
        return json_schema


@functools.cache
def _schema(model: type[ToolArgs]) -> JsonSchemaValue:
    return model.model_json_schema(schema_generator=_Compact)


def parameters(model: type[ToolArgs], services: list[str]) -> dict[str, Any]:
    """The JSON schema of a tool's arguments, its `service` one of the business's services."""
    schema = copy.deepcopy(_schema(model))
    if "service" in schema["properties"]:
        schema["properties"]["service"]["enum"] = list(services)
    return schema


# The refusal for an argument that cannot be read, where the tool has one for it: the caller
# hears what they would hear had the tool been sent something it cannot use.
REFUSALS = {"date": refusals.UNREADABLE_DATE, "time": refusals.UNREADABLE_TIME,
            "start": refusals.UNREADABLE_TIME, "new_start": refusals.UNREADABLE_TIME,
            "customer_name": refusals.NO_NAME, "customer_phone": refusals.NO_PHONE,
            "message": refusals.EMPTY_MESSAGE}


def unreadable(error: ValidationError, services: list[str]) -> ToolResult:
    """The refusal for arguments that cannot be read, about the first argument wrong (in the
    order of the model's fields, the order the tool checks them in)."""
    first = error.errors(include_url=False)[0]
    name = str(first["loc"][0]) if first["loc"] else ""
    if name == "service":
        return refusals.no_such_service(services)
    if name in REFUSALS:
        return refuse(REFUSALS[name])
    return ToolResult({"ok": False, "reason": "something went wrong on my side",
                       "note": f"The argument {name!r} was not valid ({first['msg']}). Call the tool "
                               "again with it as the tool's schema says; do not tell the caller."})


def what_was_wrong(error: ValidationError) -> str:
    """Which arguments were wrong and how, for the log: names and kinds, never what was sent."""
    return ", ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'} {e['type']}" for e in error.errors())
