"""What a camera's config says about its standing queries: the query, its alert rule, and the event-QA
answerer's prompt grammar (so the config validates a prompt without loading the answerer).

The code that runs them is :mod:`actors.standing` (the rounds, hysteresis, the window) and
:mod:`actors.answerers` (who answers).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .names import ID_PATTERN
from .webhooks import Webhook

__all__ = ["EVENT_QA_FORMS", "AlertRule", "StandingQuery", "parse_event_qa_prompt"]

_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


class AlertRule(BaseModel):
    """How an answer becomes a condition.

    - ``yes_no``: the answer's first word is yes or no; the condition holds when it is ``expect``.
    - ``match``: the condition holds when ``pattern`` (a regular expression, case-insensitive) occurs.
    - ``threshold``: the first number in the answer is above ``above`` and/or below ``below``.

    An answer the rule cannot read (no yes/no, no number) changes nothing and is counted.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["yes_no", "match", "threshold"]
    expect: Literal["yes", "no"] = Field("yes", description="yes_no: the answer that is the alarm")
    pattern: str | None = Field(None, max_length=500, description="match: a regular expression")
    above: float | None = Field(None, allow_inf_nan=False, description="threshold: alarm when the number is above")
    below: float | None = Field(None, allow_inf_nan=False, description="threshold: alarm when the number is below")

    @model_validator(mode="after")
    def _fields_of_kind(self) -> "AlertRule":
        if self.kind == "match":
            if not self.pattern:
                raise ValueError("a match rule needs a pattern")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern {self.pattern!r} is not a regular expression: {exc}") from None
        elif self.pattern is not None:
            raise ValueError(f"pattern belongs to a match rule, not {self.kind}")
        if self.kind == "threshold":
            if self.above is None and self.below is None:
                raise ValueError("a threshold rule needs above and/or below")
        elif self.above is not None or self.below is not None:
            raise ValueError(f"above/below belong to a threshold rule, not {self.kind}")
        return self

    def evaluate(self, answer: str) -> tuple[bool | None, float | None]:
        """``(condition, value)``: condition None when the answer cannot be read; value is the number a
        threshold rule read (else None)."""
        text = answer.strip().lower()
        if self.kind == "yes_no":
            word = re.match(r"[a-z]+", text)
            if word is None or word.group() not in ("yes", "no"):
                return None, None
            return word.group() == self.expect, None
        if self.kind == "match":
            return re.search(self.pattern, answer, re.IGNORECASE) is not None, None
        m = _NUMBER.search(text)
        if m is None:
            return None, None
        v = float(m.group())
        return (self.above is None or v > self.above) and (self.below is None or v < self.below), v


class StandingQuery(BaseModel):
    """One standing question of a camera (an entry of ``CameraConfig.standing``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=100, pattern=ID_PATTERN)
    prompt: str = Field(min_length=1, max_length=1000)
    every_s: float | None = Field(None, ge=0.1, allow_inf_nan=False, description="ask every this many seconds")
    on_scene_change: bool = Field(False, description="ask when the frame sampler cuts (a scene change)")
    window_s: float = Field(10.0, gt=0, allow_inf_nan=False, description="the window asked about, behind the newest frame")
    slide_s: float | None = Field(None, gt=0, allow_inf_nan=False, description=(
        "the window's start stays put until the window is window_s + slide_s long (its cache is reused meanwhile); "
        "default window_s / 2"))
    rule: AlertRule
    raise_after: int = Field(1, ge=1, le=100, description="rounds in a row with the condition before an alert")
    clear_after: int = Field(2, ge=1, le=100, description="rounds in a row without it before the alert clears")
    answerer: Literal["llm", "event-qa"] = Field("llm", description=(
        "llm: the app's video LLM; event-qa: the small event-QA model over efficientnet-lite0 tokens "
        "(offline, no LLM weights needed; a few question forms, see actors.answerers)"))
    max_new_tokens: int = Field(8, ge=1, le=256)
    webhooks: list[Webhook] = Field(default_factory=list, max_length=8, description=(
        "endpoints this query's alerts are POSTed to, besides the camera's webhooks (actors.webhooks)"))

    @model_validator(mode="after")
    def _has_trigger(self) -> "StandingQuery":
        if self.every_s is None and not self.on_scene_change:
            raise ValueError(f"standing query {self.id}: give every_s and/or on_scene_change: true")
        return self

    @property
    def slide(self) -> float:
        return self.slide_s if self.slide_s is not None else self.window_s / 2


# The question kinds the event-QA model is trained and scored on (streamdycoke.evalqa.run.SCORED_KINDS);
# "did the scene change" and "how many objects" were dropped with them: the model was near chance on them.
EVENT_QA_FORMS = {
    "present": re.compile(r"^is (?:an? |the )?(?P<obj>[a-z][a-z ]*?) in view\??$"),
    "appeared": re.compile(r"^did (?:an? |the )?(?P<obj>[a-z][a-z ]*?) appear\??$"),
}


def parse_event_qa_prompt(prompt: str) -> tuple[str, str | None, int]:
    """``(kind, object or None, look-back in frames)`` of a prompt in one of :data:`EVENT_QA_FORMS`;
    ``ValueError`` naming the forms and the objects otherwise."""
    from streamdycoke.evalqa.scenes import OBJECTS

    text = " ".join(prompt.lower().split())
    for kind, form in EVENT_QA_FORMS.items():
        m = form.match(text)
        if m is None:
            continue
        obj = m.groupdict().get("obj")
        if obj is not None:
            obj = obj.replace(" ", "-")
            if obj not in OBJECTS:
                raise ValueError(f"the event-qa answerer knows the objects {', '.join(sorted(OBJECTS))}; "
                                 f"not {obj!r}")
        return kind, obj, 10 if kind == "appeared" else 0
    raise ValueError(f"the event-qa answerer answers 'Is the <object> in view?' or 'Did the <object> appear?'; "
                     f"not {prompt[:100]!r}")
