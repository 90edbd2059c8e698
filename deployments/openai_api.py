"""The OpenAI-compatible surface of the gateway: request and response shapes, and the camera reference.

``POST /v1/chat/completions`` takes OpenAI's chat request. A user message's content may hold a
``video_url`` part naming a camera's recent window, ``camera://<camera>?window_s=<seconds>`` (default
10 s); the question is the text of the messages (the last user message's text parts, after the
earlier turns' text). The answer comes back as a ``chat.completion`` (or, with ``"stream": true``,
as ``chat.completion.chunk`` server-sent events, one per token as the LLM generates it, ending with
``data: [DONE]``, framed by sse-starlette), and ``usage`` reports
the visual tokens the answer read beside OpenAI's token counts.

``temperature``, ``top_p`` and ``seed`` map onto the LLM's generation (transformers' ``generate``:
greedy at temperature 0, the default; sampled above it). What is not supported is refused with a 400
that says so, never ignored: ``n`` > 1, tools, images, more than one camera per request.
"""

import json
import time
import uuid
from typing import Literal
from urllib.parse import parse_qs, urlparse

from pydantic import BaseModel, Field

from actors.names import CAMERA_ID_MAX, ID_PATTERN

__all__ = ["CameraRef", "ChatCompletion", "ChatCompletionChunk", "ChatRequest", "ErrorResponse", "ModelList", "Usage",
           "chat_chunks", "chat_completion", "model_list", "openai_error", "parse_request"]

CAMERA_SCHEME = "camera"


class _Url(BaseModel):
    url: str = Field(min_length=1, max_length=2000)


class ContentPart(BaseModel):
    model_config = {"extra": "forbid"}

    type: Literal["text", "video_url", "image_url"]
    text: str | None = Field(None, max_length=4000)
    video_url: _Url | None = None
    image_url: _Url | None = None


class Message(BaseModel):
    model_config = {"extra": "allow"}  # OpenAI clients add fields (name, ...) we need not read

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = None


class ChatRequest(BaseModel):
    model_config = {"extra": "allow"}  # unknown OpenAI options are listed in the 400 below, not dropped silently

    model: str = Field(min_length=1, max_length=200)
    messages: list[Message] = Field(min_length=1, max_length=64)
    max_tokens: int | None = Field(None, ge=1, le=1024)
    max_completion_tokens: int | None = Field(None, ge=1, le=1024)
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    seed: int | None = Field(None, ge=0, lt=2**63)
    n: int | None = Field(None, ge=1, le=8)
    stream_options: dict | None = None
    user: str | None = None


# options an OpenAI client may send that change nothing for a single answer
_HARMLESS = {"stream_options", "user", "frequency_penalty", "presence_penalty", "logprobs", "metadata", "store"}


class CameraRef(BaseModel):
    camera: str = Field(min_length=1, max_length=CAMERA_ID_MAX, pattern=ID_PATTERN)
    window_s: float = Field(10.0, gt=0, allow_inf_nan=False)


def parse_camera_url(url: str) -> CameraRef:
    """``camera://lobby?window_s=30`` -> ``CameraRef(camera="lobby", window_s=30)``; ``ValueError`` otherwise."""
    u = urlparse(url)
    if u.scheme != CAMERA_SCHEME or not u.netloc:
        raise ValueError(f"video_url must be camera://<camera>[?window_s=S], got {url[:100]!r}")
    q = parse_qs(u.query)
    unknown = set(q) - {"window_s"}
    if unknown:
        raise ValueError(f"camera URL: unknown parameter(s) {sorted(unknown)}; only window_s")
    try:
        window = float(q["window_s"][0]) if "window_s" in q else 10.0
    except ValueError:
        raise ValueError(f"camera URL: window_s must be a number, got {q['window_s'][0]!r}") from None
    return CameraRef(camera=u.netloc, window_s=window)


def parse_request(req: ChatRequest) -> tuple[CameraRef, str, int, dict]:
    """The camera, the question, the token budget and the generation options (``temperature``, ``top_p``,
    ``seed``) of a chat request; ``ValueError`` naming what is unsupported."""
    extra = set(req.model_extra or {}) - _HARMLESS
    if extra:
        raise ValueError(f"unsupported option(s): {sorted(extra)}")
    if (req.n or 1) != 1:
        raise ValueError("n > 1 is not supported")
    cameras: list[CameraRef] = []
    texts: list[str] = []
    for m in req.messages:
        if m.content is None:
            continue
        parts = [ContentPart(type="text", text=m.content)] if isinstance(m.content, str) else m.content
        for p in parts:
            if p.type == "image_url":
                raise ValueError("image_url parts are not supported: name a camera with a video_url part")
            if p.type == "video_url":
                if m.role != "user" or p.video_url is None:
                    raise ValueError("a video_url part belongs in a user message and needs a url")
                cameras.append(parse_camera_url(p.video_url.url))
            elif p.text:
                texts.append(p.text if m.role == "user" else f"{m.role}: {p.text}")
    if len(cameras) != 1:
        raise ValueError(f"a request must reference exactly one camera (video_url camera://...), found {len(cameras)}")
    question = "\n".join(texts).strip()
    if not question:
        raise ValueError("no question: the messages hold no text")
    if len(question) > 4000:
        raise ValueError(f"the question is {len(question)} characters of text; at most 4000")
    budget = req.max_completion_tokens or req.max_tokens or 32
    options = {"temperature": req.temperature if req.temperature is not None else 0.0,
               "top_p": req.top_p if req.top_p is not None else 1.0, "seed": req.seed}
    return cameras[0], question, budget, options


_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                409: "invalid_request_error", 503: "service_unavailable"}


# ---- responses, in OpenAI's shapes ------------------------------------------------------------------


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class ErrorResponse(BaseModel):
    """``{"error": {"message", "type", "param", "code"}}``, so OpenAI clients show the reason."""

    error: ErrorDetail


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "streamdycoke"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Usage(BaseModel):
    """OpenAI's usage, and the visual tokens the answer read beside it. ``prompt_tokens`` is every token the
    model read (the chat text, tokenized by the model's tokenizer, and the visual tokens), as the LLM
    replica counted them."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    visual_tokens: int
    visual_tokens_uncompressed: int
    frames: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


def openai_error(status: int, message: str, headers: dict | None = None):
    """An :class:`ErrorResponse` with ``status``."""
    from fastapi.responses import JSONResponse

    body = ErrorResponse(error=ErrorDetail(message=message, type=_ERROR_TYPES.get(status, "api_error"), code=status))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def model_list(model_id: str) -> dict:
    return ModelList(data=[ModelCard(id=model_id)]).model_dump()


def _usage(out: dict) -> Usage:
    """:class:`Usage` of the gateway's answer ``out``."""
    u = out["usage"]
    prompt = u["prompt_tokens"]
    return Usage(prompt_tokens=prompt, completion_tokens=u["new_tokens"], total_tokens=prompt + u["new_tokens"],
                 visual_tokens=u["visual_tokens"], visual_tokens_uncompressed=u["visual_tokens_uncompressed"],
                 frames=u["frames"])


def chat_completion(model_id: str, out: dict, budget: int) -> dict:
    """A :class:`ChatCompletion` (as JSON-ready dict) from the gateway's answer ``out``."""
    return ChatCompletion(
        id=f"chatcmpl-{uuid.uuid4().hex[:24]}", created=int(time.time()), model=model_id,
        choices=[Choice(message=AssistantMessage(content=out["answer"]), finish_reason=out.get("finish_reason", "length"))],
        usage=_usage(out)).model_dump()


async def chat_chunks(model_id: str, items, include_usage: bool, to_out):
    """``chat.completion.chunk`` server-sent events as the LLM generates, each a ``{"data": json}`` event for
    sse-starlette to frame: ``items`` is the LLM's stream (``{"delta": text}`` per token, then
    ``{"result": ...}``), ``to_out`` turns the result into the gateway's answer (for the finish reason and
    usage). Ends with ``[DONE]``; an error after the stream began is sent as an event in OpenAI's error shape."""
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def event(delta: Delta, finish: str | None = None, usage: Usage | None = None, choices: bool = True) -> dict:
        chunk = ChatCompletionChunk(id=cid, created=created, model=model_id, usage=usage,
                                    choices=[ChunkChoice(delta=delta, finish_reason=finish)] if choices else [])
        # usage only on the last chunk, when asked for (as OpenAI sends it); otherwise the field is left out
        return {"data": chunk.model_dump_json(exclude={"usage"} if usage is None else None)}

    yield event(Delta(role="assistant", content=""))
    try:
        async for item in items:
            if "delta" in item:
                yield event(Delta(content=item["delta"]))
                continue
            out = to_out(item["result"])
            yield event(Delta(), out.get("finish_reason", "length"))
            if include_usage:
                yield event(Delta(), usage=_usage(out), choices=False)
    except Exception as exc:  # the replica failed mid-answer: said on the stream, in OpenAI's shape
        err = {"message": f"the answer was cut off: {type(exc).__name__}", "type": "service_unavailable",
               "param": None, "code": 503}
        yield {"data": json.dumps({"error": err})}
    yield {"data": "[DONE]"}
