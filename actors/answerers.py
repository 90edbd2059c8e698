"""Who answers a standing query: the app's video LLM, or the small event-QA model.

An answerer is a callable ``(camera, query, segments, reuse_key) -> Answer``
(:class:`actors.standing.Answer`), ``segments`` the window's wire-format bytes as the store holds them:

- :class:`LLMAnswerer`: the LLM deployment, through a Serve handle. It sends the camera id as Serve's
  multiplexed model id, so the request goes to the replica that holds the camera's KV caches, and a
  ``reuse_key`` so that replica prefills only what the window added since the last round.
- :class:`EventQAAnswerer`: the event-QA model of ``streamdycoke eval`` (:mod:`streamdycoke.evalqa`)
  over ``efficientnet-lite0`` tokens, for setups without LLM weights (the offline demo). It answers a
  few question forms about the objects of the evaluation scenes (see :data:`actors.queries.EVENT_QA_FORMS`).
"""

from __future__ import annotations

from typing import Any

from .llm_request import LLMRequest
from .queries import StandingQuery, parse_event_qa_prompt
from .standing import Answer

__all__ = ["EventQAAnswerer", "LLMAnswerer"]


class LLMAnswerer:
    """Standing queries answered by the LLM deployment (``handle``: a Serve handle of ``LLMDeployment``)."""

    def __init__(self, handle: Any, timeout_s: float = 60.0) -> None:
        self.handle, self.timeout_s = handle, timeout_s

    def __call__(self, camera: str, query: StandingQuery, segments: list[bytes], reuse_key: str | None) -> Answer:
        if not segments:
            raise LookupError("the window holds no frames")
        req = LLMRequest(camera, query.prompt, query.max_new_tokens, list(segments), reuse_key=reuse_key)
        res = self.handle.options(multiplexed_model_id=camera).generate.remote(req).result(timeout_s=self.timeout_s)
        return Answer(res["answer"], res["visual_tokens"], res.get("reused_tokens", 0))


class EventQAAnswerer:
    """Standing queries answered by the event-QA model over the window's ``efficientnet-lite0`` tokens.

    The window is laid on the model's 5-fps frame slots by capture time (the newest frame last, at most
    40 slots: 8 s), each kept token at its frame's slot, and read as every reader reads a compressed
    stream (:mod:`streamdycoke.reading`): the kept tokens of older frames, then the live frame whole.
    Visual tokens reported: the tokens the model is given (the now frame's included). The objects a prompt
    names are given to the model as their reference pictures, encoded once. Weights:
    ``streamdycoke/assets/event_qa.pt``, the eval's first-seed answerer (``streamdycoke eval --retrain``:
    400 training streams, half the questions read through compressed versions of them, 3,000 steps; see
    the README's Accuracy).
    """

    def __init__(self, weights: str | None = None) -> None:
        from pathlib import Path

        from streamdycoke.evalqa.answerer import EventQA

        path = weights or str(Path(__file__).resolve().parents[1] / "streamdycoke" / "assets" / "event_qa.pt")
        self.model = EventQA.load(path)
        self._encoder = None
        self.refs: dict = {}

    def _ref(self, name: str):
        if name not in self.refs:
            from streamdycoke import EncoderSpec, build_encoder
            from streamdycoke.evalqa.data import object_references

            if self._encoder is None:
                self._encoder = build_encoder(EncoderSpec(name="efficientnet-lite0"))
            self.refs.update(object_references(self._encoder, names=[name]))
        return self.refs[name]

    def __call__(self, camera: str, query: StandingQuery, window: list[bytes], reuse_key: str | None) -> Answer:
        import torch

        from streamdycoke.evalqa.answerer import StreamInputs, build_batch
        from streamdycoke.evalqa.questions import ANSWERS, Question
        from streamdycoke.evalqa.scenes import FPS
        from streamdycoke.reading import reading
        from streamdycoke.segment import decode_segment

        if not window:
            raise LookupError("the window holds no frames")
        segments = reading([decode_segment(b) for b in window])  # the live frame (or held now frame) last
        kind, obj, window = parse_event_qa_prompt(query.prompt)
        N, D = segments[0].grid[0] * segments[0].grid[1], segments[0].dim
        if D != self.model.config["dim"] or N != self.model.config["positions"]:
            raise ValueError(f"camera {camera}: tokens of {N} positions x {D} are not efficientnet-lite0's")
        end = segments[-1].timestamp
        T = min(40, 1 + int(round((end - segments[0].timestamp) * FPS)))
        # each token at its frame's slot (by capture time; of two frames on one slot the later wins); the
        # newest slot holds the now frame, which build_batch reads whole, as every reader (streamdycoke.reading)
        tokens = torch.zeros(T, N, D)
        keep = torch.zeros(T, N)
        for seg in segments:
            slot = T - 1 - int(round((end - seg.timestamp) * FPS))
            if slot < 0:
                continue
            tokens[slot, seg.positions] = seg.tokens.float()
            keep[slot, seg.positions] = 1.0
        refs = {obj: self._ref(obj)} if obj is not None else {}
        inputs = StreamInputs(self.model, tokens)
        q = Question(kind=kind, t=T - 1, window=window, x=obj, y=None, answer=0)
        with torch.no_grad():
            logits = self.model(build_batch(self.model, [(inputs, q, keep)], refs))
        given = sum(seg.num_kept for seg in segments)
        return Answer(ANSWERS[int(logits.argmax(-1))], visual_tokens=given)

