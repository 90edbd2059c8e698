"""The OpenAI request mapping, without a server: camera references, the question, refusals that say why."""

import pytest

from deployments.openai_api import ChatRequest, chat_chunks, parse_camera_url, parse_request


def _req(content, **kw):
    return ChatRequest(model="m", messages=[{"role": "user", "content": content}], **kw)


def _cam(url="camera://lobby?window_s=30"):
    return {"type": "video_url", "video_url": {"url": url}}


def test_a_camera_part_and_text_make_a_query():
    cam, question, budget, opts = parse_request(_req([{"type": "text", "text": "who is at the door?"}, _cam()],
                                                     max_tokens=7))
    assert (cam.camera, cam.window_s, question, budget) == ("lobby", 30.0, "who is at the door?", 7)
    assert opts == {"temperature": 0.0, "top_p": 1.0, "seed": None}  # greedy unless asked
    hot = parse_request(_req([{"type": "text", "text": "hi"}, _cam()], temperature=0.7, top_p=0.9, seed=3))[3]
    assert hot == {"temperature": 0.7, "top_p": 0.9, "seed": 3}
    assert parse_camera_url("camera://dock-2").window_s == 10.0  # the default window
    sys_first = ChatRequest(model="m", max_completion_tokens=3, messages=[
        {"role": "system", "content": "answer briefly"},
        {"role": "user", "content": [_cam(), {"type": "text", "text": "anyone?"}]}])
    assert parse_request(sys_first)[1:3] == ("system: answer briefly\nanyone?", 3)


@pytest.mark.parametrize("content, kw, words", [
    ([{"type": "text", "text": "hi"}], {}, "exactly one camera"),
    ([_cam(), _cam("camera://b")], {}, "exactly one camera"),
    ([_cam("http://x/y.mp4"), {"type": "text", "text": "hi"}], {}, "camera://"),
    ([_cam("camera://a?fps=3"), {"type": "text", "text": "hi"}], {}, "unknown parameter"),
    ([_cam("camera://a?window_s=abc"), {"type": "text", "text": "hi"}], {}, "must be a number"),
    ([_cam()], {}, "no question"),
    ([_cam(), {"type": "text", "text": "hi"}], {"temperature": 2.5}, "less than or equal to 2"),
    ([_cam(), {"type": "text", "text": "hi"}], {"n": 2}, "n > 1"),
    ([_cam(), {"type": "text", "text": "hi"}], {"tools": [{"type": "function"}]}, "unsupported option"),
    ([_cam(), {"type": "image_url", "image_url": {"url": "data:x"}}], {}, "image_url"),
    ([_cam(), {"type": "text", "text": "a" * 3000}, {"type": "text", "text": "b" * 3000}], {}, "at most 4000"),
])
def test_what_is_not_supported_is_refused_by_name(content, kw, words):
    with pytest.raises(ValueError, match=words):
        parse_request(_req(content, **kw))


def test_bad_camera_names_fail_validation():
    with pytest.raises(ValueError):
        parse_camera_url("camera://lob%20by?window_s=1")


def test_stream_events_carry_each_token_then_finish_usage_and_done():
    import asyncio
    import json

    out = {"answer": "two people near the door", "finish_reason": "stop", "usage": {
        "new_tokens": 5, "visual_tokens": 90, "visual_tokens_uncompressed": 400, "frames": 30,
        "prompt_tokens": 97}}

    async def items():
        for i, w in enumerate(out["answer"].split()):
            yield {"delta": w if i == 0 else " " + w}
        yield {"result": {"raw": True}}

    async def collect(gen):
        return [e async for e in gen]

    events = asyncio.run(collect(chat_chunks("m", items(), True, lambda res: out)))
    assert events[-1] == {"data": "[DONE]"}
    bodies = [json.loads(e["data"]) for e in events[:-1]]
    deltas = [b["choices"][0]["delta"].get("content") for b in bodies if b["choices"]]
    assert deltas[1:6] == ["two", " people", " near", " the", " door"]  # one event per token, as it came
    assert "".join(d or "" for d in deltas) == out["answer"]
    assert bodies[-1]["usage"]["visual_tokens"] == 90 and bodies[-2]["choices"][0]["finish_reason"] == "stop"
    # the prompt's tokens as the replica counted them (its tokenizer's text tokens and the visual tokens)
    assert bodies[-1]["usage"]["prompt_tokens"] == 97 and bodies[-1]["usage"]["total_tokens"] == 102

    async def broken():
        yield {"delta": "two"}
        raise ConnectionError("replica gone")

    events = asyncio.run(collect(chat_chunks("m", broken(), False, lambda res: out)))
    assert json.loads(events[-2]["data"])["error"]["code"] == 503 and events[-1] == {"data": "[DONE]"}