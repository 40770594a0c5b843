"""Pydantic models of the OpenAI API we accept and return.

Requests are strict about types (a string where a number belongs is a 400, as at OpenAI) and refuse
top-level fields they do not know (protocol_base). Replies follow OpenAI's shapes, plus `usage.performance`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from pyinfer.generation_config import with_defaults
from pyinfer.sampling_params import SamplingParams, SamplingParamsError, StructuredOutput
from pyinfer.server.protocol_base import UNSUPPORTED, Body, Metadata, Request, Settings, Temperature
from pyinfer.server.protocol_structured import ResponseFormat, StructuredOutputs, one_constraint
from pyinfer.server.protocol_tools import (
    ChatTool,
    ChatToolChoice,
    ToolCall,
    ToolCallChunk,
    ToolChoiceMode,
    ToolRequest,
    template_tool_call,
)
from pyinfer.tokenizer import TemplateOptions


# ---- requests -------------------------------------------------------------------------------------
class ResponsesStreamOptions(Settings):
    """The Responses API's stream_options; chat's add include_usage."""

    include_obfuscation: Literal[False] | None = None  # no padding is added to events (true is a 400)


class StreamOptions(ResponsesStreamOptions):
    include_usage: bool = False


def stream_options_unused(
    stream: bool | None, options: ResponsesStreamOptions | None
) -> tuple[str, str] | None:
    """(param, message) for stream_options without a stream, where it would do nothing (a 400 at OpenAI)."""
    if options is not None and not stream:
        return "stream_options", "stream_options is only allowed when stream is true"
    return None


class SamplingRequest(Body):
    """Fields that chat and completions requests share."""

    model: str | None = None
    max_tokens: int | None = None
    temperature: Temperature | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = None
    priority: int | None = None  # under --scheduling-policy priority: lower runs first

    def constraint(self) -> StructuredOutput | None:
        """The output's constraint, if the request sets one (response_format or structured_outputs)."""
        return one_constraint(
            self.response_format.constraint() if self.response_format else None,
            self.structured_outputs.constraint() if self.structured_outputs else None,
        )

    def unsupported(self) -> tuple[str, str] | None:
        """(param, message) for what the request asks that is not served, rather than ignore in silence."""
        return stream_options_unused(self.stream, self.stream_options)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    @property
    def limit_param(self) -> str:
        """The field that set the reply's token limit, for errors about it."""
        return "max_tokens"

    def sampling_params(
        self, max_tokens: int | None, defaults: dict[str, Any], logprobs: int | None
    ) -> SamplingParams:
        """Validated engine parameters, `defaults` (the server's, by field name) for the fields this
        request leaves out; raises SamplingParamsError naming the field."""
        bias = None
        if self.logit_bias:
            try:
                bias = {int(token): value for token, value in self.logit_bias.items()}
            except ValueError:
                raise SamplingParamsError("logit_bias", "keys must be token ids") from None
        return engine_sampling_params(
            defaults,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            n=self.n,
            seed=self.seed,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            repetition_penalty=self.repetition_penalty,
            max_tokens=max_tokens,
            structured=self.constraint(),
            min_tokens=self.min_tokens,
            stop=[self.stop] if isinstance(self.stop, str) else list(self.stop or []),
            stop_token_ids=self.stop_token_ids or [],
            include_stop_str_in_output=self.include_stop_str_in_output,
            ignore_eos=self.ignore_eos,
            logit_bias=bias,
            logprobs=logprobs,
            skip_special_tokens=self.skip_special_tokens,
            priority=self.priority,
        )


def engine_sampling_params(defaults: dict[str, Any], **given: Any) -> SamplingParams:
    """The request's fields (those not None) over the server's defaults; with max_tokens in neither,
    generation runs until the context is full."""
    return SamplingParams(**{"max_tokens": None, **with_defaults(defaults, **given)})


class TextContent(Request):
    """A part of a message's content that is text, whatever the API calls its type."""

    text: str

    @property
    def said(self) -> str:
        return self.text


class TextPart(TextContent):
    type: Literal["text"]


class RefusalPart(Request):
    """An assistant's earlier refusal, as OpenAI's replies carry it."""

    type: Literal["refusal"]
    refusal: str

    @property
    def said(self) -> str:
        return self.refusal


MEDIA_PARTS = ("image_url", "input_audio", "file", "input_image", "input_file", "video_url")


def refuse_media(part: Any) -> Any:
    """An image, audio or file part (chat's and the Responses API's names) is refused by name, since the
    models served read text only; anything else is left to the union of text parts to judge."""
    if isinstance(part, dict) and part.get("type") in MEDIA_PARTS:
        raise PydanticCustomError(
            UNSUPPORTED,
            "content parts of type '{kind}' are not supported: this server's model reads text only",
            {"kind": part["type"]},
        )
    return part


MEDIA_REFUSED = BeforeValidator(refuse_media)  # on a content part's union: before any kind is tried
# not tagged by `type`: pydantic would put the tag in errors' places
ContentPart = Annotated[TextPart | RefusalPart, MEDIA_REFUSED]


class ChatMessage(Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | Annotated[list[ContentPart], Field(min_length=1)] | None = (
        None  # no parts: a 400, as at OpenAI
    )
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # an assistant's earlier calls
    tool_call_id: str | None = None  # a tool's result: the call it answers

    @model_validator(mode="after")
    def _tool_fields(self) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a message of role tool needs a tool_call_id")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only an assistant message may have tool_calls")
        if self.content is None and self.role != "assistant":  # an assistant's may be only its calls
            raise ValueError(f"a message of role {self.role} needs content")
        parts = [] if isinstance(self.content, str) else self.content or []
        if self.role != "assistant" and any(isinstance(p, RefusalPart) for p in parts):
            raise ValueError("only an assistant message may have a refusal part")
        return self

    def template_dict(self) -> dict[str, Any]:
        """The message as chat templates take it: `developer` is a system role, parts joined, calls'
        arguments as objects (templates write them with tojson)."""
        content = (
            self.content if isinstance(self.content, str) else "".join(p.said for p in self.content or [])
        )
        message: dict[str, Any] = {
            "role": "system" if self.role == "developer" else self.role,
            "content": content,
        }
        if self.tool_calls:
            message["tool_calls"] = [
                template_tool_call(c.id, c.function.name, c.function.arguments) for c in self.tool_calls
            ]
        if self.tool_call_id:
            message["tool_call_id"] = self.tool_call_id
        if self.name:  # the tokenizer says it where the template would not
            message["name"] = self.name
        return message


class TemplateControls(Body):
    """vLLM's controls of how a conversation is rendered through the chat template."""

    chat_template_kwargs: dict[str, Any] | None = None  # more variables for the chat template
    add_generation_prompt: bool = True  # open the assistant's turn
    continue_final_message: bool = False  # leave the last (assistant) message open, to be continued

    def template_options(self) -> TemplateOptions:
        return TemplateOptions(
            self.add_generation_prompt, self.continue_final_message, self.chat_template_kwargs or {}
        )


class ChatCompletionRequest(SamplingRequest, TemplateControls):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = None
    tools: list[ChatTool] | None = None
    tool_choice: ToolChoiceMode | ChatToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # OpenAI's hints that change nothing in a reply: accepted
    metadata: Metadata | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None  # prefixes are cached whatever the key
    prompt_cache_retention: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    safety_identifier: str | None = None
    modalities: list[Literal["text"]] | None = None  # text is all there is
    # OpenAI's features this server does not have: refused when set
    store: bool | None = None
    reasoning_effort: str | None = None  # "none" asks for what these models do anyway
    verbosity: Any = None
    audio: Any = None
    prediction: Any = None
    web_search_options: Any = None
    functions: Any = None
    function_call: Any = None
    moderation: Any = None

    def tool_request(self) -> ToolRequest | None:
        functions = [t.function for t in self.tools or []]
        return ToolRequest.of(functions, self.tool_choice, self.parallel_tool_calls)

    def unsupported(self) -> tuple[str, str] | None:
        if problem := super().unsupported():
            return problem
        if self.top_logprobs and not self.logprobs:
            return "top_logprobs", "top_logprobs needs logprobs set to true"
        if self.continue_final_message and self.add_generation_prompt:
            return "continue_final_message", "continue_final_message needs add_generation_prompt set to false"
        if self.continue_final_message and self.messages[-1].role != "assistant":
            return (
                "continue_final_message",
                "continue_final_message needs an assistant message last, to continue",
            )
        return self.refused_fields(CHAT_FIELDS_REFUSED, also_no_op={"reasoning_effort": "none"})

    @property
    def limit_param(self) -> str:
        return "max_tokens" if self.max_completion_tokens is None else "max_completion_tokens"

    def engine_params(self, defaults: dict[str, Any]) -> SamplingParams:
        limit = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        try:
            return self.sampling_params(limit, defaults, (self.top_logprobs or 0) if self.logprobs else None)
        except SamplingParamsError as e:  # chat names the number of alternatives top_logprobs
            raise e.named({"logprobs": "top_logprobs"}) from None


MODERATION_REFUSED = "this server runs no moderation on input or output"
CHAT_FIELDS_REFUSED = {
    "store": "stored chat completions are not kept by this server",
    "reasoning_effort": "this server's models do not reason before answering",
    "verbosity": "not supported",
    "audio": "audio output is not supported",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
    "functions": "the deprecated functions field is not supported: use tools",
    "function_call": "the deprecated function_call field is not supported: use tool_choice",
    "moderation": MODERATION_REFUSED,
}


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = False
    logprobs: int | None = None
    best_of: int | None = None
    suffix: str | None = None

    def prompts(self) -> list[str | list[int]]:
        """The prompt as a list of prompts (each a string or token ids)."""
        p = self.prompt
        if isinstance(p, str) or (p and isinstance(p[0], int)):
            return [p]
        return list(p)

    def unsupported(self) -> tuple[str, str] | None:
        if problem := super().unsupported():
            return problem
        if self.echo and self.logprobs is not None:
            return "echo", "echo with logprobs is not supported: prompt logprobs are not computed"
        if self.best_of is not None and self.best_of != (self.n or 1):
            return "best_of", "best_of other than n is not supported: ask for n choices and pick among them"
        if self.suffix:
            return "suffix", "suffix is not supported: no model here fills in the middle"
        return None

    def engine_params(self, defaults: dict[str, Any]) -> SamplingParams:
        return self.sampling_params(self.max_tokens, defaults, self.logprobs)

    def tool_request(self) -> None:
        return None


class TokenizeRequest(TemplateControls):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    tools: list[ChatTool] | None = None  # with messages: counted as a chat request offering them is
    add_special_tokens: bool = True

    def tool_request(self) -> ToolRequest | None:
        """The tools as a chat request offering them under tool_choice auto gives them the model."""
        return ToolRequest.of([t.function for t in self.tools or []], None, None)


class DetokenizeRequest(Body):
    model: str | None = None
    tokens: list[int]


# ---- replies --------------------------------------------------------------------------------------
class Performance(BaseModel):
    """Where the time of one request went (engine-side), in milliseconds."""

    queue_ms: float
    prefill_ms: float
    decode_ms: float
    decode_iterations: int
    tokens_per_second: float
    time_to_first_token_ms: float


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0  # computed here and left findable in the prefix cache for later prompts


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails
    performance: Performance


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCall] | None = Field(default=None, exclude_if=lambda v: not v)


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = Field(default=None, exclude_if=lambda v: v is None)
    content: str | None = Field(default=None, exclude_if=lambda v: v is None)
    tool_calls: list[ToolCallChunk] | None = Field(default=None, exclude_if=lambda v: v is None)


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = Field(default=None, exclude_if=lambda v: v is None)


class ChatCompletionChunkWithUsage(ChatCompletionChunk):
    """A chunk of a stream that asked for usage: as at OpenAI, every chunk has the key, null but the last."""

    usage: Usage | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = Field(default=None, exclude_if=lambda v: v is None)


class CompletionChunkWithUsage(Completion):
    """A chunk of a completions stream that asked for usage: every chunk has the key, null but the last."""

    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "pyinfer"
    root: str
    max_model_len: int
    sampling_defaults: dict[str, Any]  # what a request that leaves these fields out gets


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
