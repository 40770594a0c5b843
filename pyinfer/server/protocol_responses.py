"""Pydantic models of OpenAI's Responses API: the request, the `response` object, its stream events."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pyinfer.sampling_params import SamplingParams, SamplingParamsError
from pyinfer.server.protocol import (
    MEDIA_REFUSED,
    MODERATION_REFUSED,
    ChatMessage,
    ChatTokenLogprob,
    Performance,
    RefusalPart,
    Request,
    ResponsesStreamOptions,
    TextContent,
    Usage,
    engine_sampling_params,
    stream_options_unused,
)
from pyinfer.server.protocol_base import Body, Metadata, Settings, Temperature
from pyinfer.server.protocol_structured import TextFormat
from pyinfer.server.protocol_tools import (
    ResponsesTool,
    ResponsesToolChoice,
    ToolChoiceMode,
    ToolRequest,
    template_tool_call,
)


# ---- requests -------------------------------------------------------------------------------------
class InputText(TextContent):
    type: Literal["input_text", "output_text"]


class InputMessage(ChatMessage):
    """A message item of a Responses input; earlier outputs come back as `output_text` parts (calls and
    their results are items of their own)."""

    type: Literal["message"] = "message"
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[Annotated[InputText | RefusalPart, MEDIA_REFUSED]]
    tool_calls: None = None
    tool_call_id: None = None

    @field_validator("name", mode="before")
    @classmethod
    def _no_name(cls, name: Any) -> None:
        """Responses' messages have no `name` (chat's does): ignored as other fields they do not use."""
        return None


class FunctionCallInput(Request):
    """An earlier call of the model, as a Responses output item sent back."""

    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputInput(Request):
    """A tool's result for the call `call_id`."""

    type: Literal["function_call_output"]
    call_id: str
    output: str | list[InputText]
    id: str | None = None
    status: str | None = None


InputItem = InputMessage | FunctionCallInput | FunctionCallOutputInput


class TextConfig(Settings):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None  # refused when set, as chat's `verbosity` is


LOGPROBS_INCLUDED = "message.output_text.logprobs"  # the one `include` served: the output text's logprobs
RESPONSES_FIELDS_REFUSED = {
    "conversation": "conversations are not kept by this server: use previous_response_id",
    "prompt": "stored prompt templates are not supported",
    "context_management": "not supported",
    "moderation": MODERATION_REFUSED,
    "background_options": "background responses are not run by this server",
    "image": "image generation is not supported",
    "access_programs": "not supported",
}


class ResponsesRequest(Body):
    model: str | None = None
    input: str | list[InputItem]
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: Temperature | None = None
    top_p: float | None = None
    store: bool | None = True  # null is OpenAI's default: kept (the openai SDK sends it for store=None)
    previous_response_id: str | None = None
    metadata: Metadata | None = None
    user: str | None = None
    stream: bool | None = False
    background: bool | None = False
    priority: int | None = None  # under --scheduling-policy priority: lower runs first
    tools: list[ResponsesTool] | None = None
    tool_choice: ToolChoiceMode | ResponsesToolChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    stream_options: ResponsesStreamOptions | None = None
    # OpenAI's hints that change nothing in a reply: accepted
    service_tier: str | None = None
    prompt_cache_key: str | None = None  # prefixes are cached whatever the key
    prompt_cache_retention: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    safety_identifier: str | None = None
    truncation: Literal["auto", "disabled"] | None = None  # auto: the oldest turns dropped to fit
    # bounds the calls of OpenAI's built-in tools (function calls are not counted): none run here
    max_tool_calls: Annotated[int, Field(ge=0)] | None = None
    # OpenAI's features this server does not have: refused when set
    include: list[str] | None = None  # only LOGPROBS_INCLUDED
    top_logprobs: int | None = None  # alternatives a token; given, the logprobs are included
    reasoning: dict[str, Any] | None = None
    conversation: Any = None
    prompt: Any = None
    context_management: Any = None
    moderation: Any = None
    background_options: Any = None
    image: Any = None
    access_programs: Any = None

    @property
    def kept(self) -> bool:
        """Whether the response is stored, to be retrieved and continued."""
        return self.store is not False

    def tool_request(self) -> ToolRequest | None:
        if not self.tools and self.tool_choice in (None, "auto", "none"):
            # Unlike chat, the Responses API takes these without tools (the Agents SDK sends `tools: []`
            # with whatever its settings hold): there is nothing to call either way.
            return None
        return ToolRequest.of(self.tools, self.tool_choice, self.parallel_tool_calls)

    def unsupported(self) -> tuple[str, str] | None:
        """(param, message) for a feature we do not serve yet, rather than ignore in silence."""
        if self.background:
            return "background", "background responses are not supported yet"
        if unused := stream_options_unused(self.stream, self.stream_options):
            return unused
        asked = {
            k: v for k, v in (self.reasoning or {}).items() if v is not None and (k, v) != ("effort", "none")
        }
        if asked:  # {"effort": null} or "none" asks for what these models do anyway
            return "reasoning", "reasoning: this server's models do not reason before answering"
        if self.text is not None and self.text.verbosity is not None:
            return "text", "text.verbosity is not supported"
        if other := sorted(set(self.include or ()) - {LOGPROBS_INCLUDED}):
            return "include", f"include: only {LOGPROBS_INCLUDED} is served here, not {', '.join(other)}"
        return self.refused_fields(RESPONSES_FIELDS_REFUSED)

    def messages(self) -> list[dict[str, Any]]:
        """The input as chat-template messages: calls join the assistant turn before them, results
        are tool messages."""
        if isinstance(self.input, str):
            return [{"role": "user", "content": self.input}]
        messages: list[dict[str, Any]] = []
        for item in self.input:
            if isinstance(item, FunctionCallInput):
                call = template_tool_call(item.call_id, item.name, item.arguments)
                if messages and messages[-1]["role"] == "assistant":
                    messages[-1].setdefault("tool_calls", []).append(call)
                else:
                    messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
            elif isinstance(item, FunctionCallOutputInput):
                output = item.output if isinstance(item.output, str) else "".join(p.text for p in item.output)
                messages.append({"role": "tool", "content": output, "tool_call_id": item.call_id})
            else:
                messages.append(item.template_dict())
        return messages

    def input_items(self) -> list[dict[str, Any]]:
        """The input as Responses items, each with an id (as GET .../input_items lists them)."""
        if isinstance(self.input, str):
            return [_message_item("user", [self.input])]
        items: list[dict[str, Any]] = []
        for item in self.input:
            if isinstance(item, InputMessage):
                texts = (
                    [item.content] if isinstance(item.content, str) else [part.text for part in item.content]
                )
                items.append(_message_item(item.role, texts))
            else:
                prefix = "fc" if isinstance(item, FunctionCallInput) else "fco"
                dumped = item.model_dump(exclude_none=True)
                items.append(
                    {**dumped, "id": item.id or f"{prefix}_{uuid.uuid4().hex}", "status": "completed"}
                )
        return items

    def engine_params(self, defaults: dict[str, Any]) -> SamplingParams:
        try:
            return engine_sampling_params(
                defaults,
                temperature=self.temperature,
                top_p=self.top_p,
                max_tokens=self.max_output_tokens,
                structured=self.text.format.constraint() if self.text and self.text.format else None,
                priority=self.priority,
                logprobs=self.logprobs,
            )
        except SamplingParamsError as e:  # the number of alternatives is top_logprobs here
            raise e.named({"logprobs": "top_logprobs"}) from None

    @property
    def logprobs(self) -> int | None:
        """The alternatives a token for the output text's logprobs; None where they are not asked for."""
        if self.top_logprobs is None and LOGPROBS_INCLUDED not in (self.include or ()):
            return None
        return self.top_logprobs or 0

    @property
    def limit_param(self) -> str:
        return "max_output_tokens"

    def text_echo(self) -> dict[str, Any]:
        """The reply's `text`: the format asked for, as given (clients read the reply's to parse it)."""
        given = self.text.format if self.text is not None else None
        return {"format": given.model_dump(by_alias=True, exclude_none=True) if given else {"type": "text"}}


def _message_item(role: str, texts: list[str]) -> dict[str, Any]:
    """A message of the input as input_items lists it, as OpenAI does: an assistant's parts are output
    text, with its (here no) annotations; every other role's are input text."""
    parts = [
        {"type": "output_text", "text": text, "annotations": []}
        if role == "assistant"
        else {"type": "input_text", "text": text}
        for text in texts
    ]
    return {
        "id": f"msg_{uuid.uuid4().hex}",
        "type": "message",
        "role": role,
        "status": "completed",
        "content": parts,
    }


# ---- replies --------------------------------------------------------------------------------------
class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[ChatTokenLogprob] = Field(default_factory=list)  # where asked for (include)


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: Literal["in_progress", "completed", "incomplete"]
    content: list[OutputText]


ItemStatus = Literal["in_progress", "completed", "incomplete"]


class FunctionCallItem(BaseModel):
    id: str
    type: Literal["function_call"] = "function_call"
    call_id: str
    name: str
    arguments: str
    status: ItemStatus


OutputItem = OutputMessage | FunctionCallItem


class InputTokensDetails(BaseModel):
    cached_tokens: int
    cache_write_tokens: int


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int
    performance: Performance

    @classmethod
    def of(cls, usage: Usage) -> ResponseUsage:
        """Chat usage in the Responses API's names."""
        return cls(
            input_tokens=usage.prompt_tokens,
            input_tokens_details=InputTokensDetails(
                cached_tokens=usage.prompt_tokens_details.cached_tokens,
                cache_write_tokens=usage.prompt_tokens_details.cache_write_tokens,
            ),
            output_tokens=usage.completion_tokens,
            output_tokens_details=OutputTokensDetails(),
            total_tokens=usage.total_tokens,
            performance=usage.performance,
        )


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class ResponseError(BaseModel):
    code: str
    message: str


ResponseStatus = Literal["in_progress", "completed", "incomplete", "cancelled", "failed"]


class ResponseObject(BaseModel):
    """A Responses API `response`: whole, inside stream events, and as stored."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    completed_at: int | None = None
    status: ResponseStatus
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None
    max_output_tokens: int | None
    metadata: dict[str, str]
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None
    background: bool = False
    store: bool
    temperature: float
    top_p: float
    top_logprobs: int = 0
    max_tool_calls: int | None = None
    service_tier: str = "default"  # the one way this server serves, whatever tier was asked
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    text: dict[str, Any]
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    truncation: str = "disabled"
    usage: ResponseUsage | None = None
    user: str | None

    @property
    def output_text(self) -> str:
        return "".join(part.text for item in self.output if item.type == "message" for part in item.content)


class ResponseEvent(BaseModel):
    """One streamed Responses event: its type, its place in the stream, and the fields of its type."""

    model_config = ConfigDict(extra="allow")
    type: str
    sequence_number: int


class InputItemList(BaseModel):
    """A page of a response's input items."""

    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool


class ResponseDeleted(BaseModel):
    id: str
    object: Literal["response.deleted"] = "response.deleted"
    deleted: bool = True
