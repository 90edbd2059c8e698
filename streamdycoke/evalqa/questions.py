"""Questions an operator asks of a camera, with answers known from the scene generator.

Kinds (each asked at a time ``t``: the answerer sees only frames up to ``t``, as on a live stream):

- ``present``: is object X in view now (at ``t``)?  yes / no
- ``appeared``: did X appear in the last S seconds (frames ``t - S*fps + 1 .. t``)?  yes / no
- ``scene_change``: when did the scene change (which quarter of the stream), if at all?
- ``count``: how many distinct objects appeared?  0 .. 3
- ``first``: which came first, X or Y?

X and Y are given as pictures (:func:`~.scenes.object_reference_frame`), so a question can name an
object the answerer never saw in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scenes import OBJECTS, Scene, scene_objects

__all__ = ["ANSWERS", "KINDS", "KIND_ANSWERS", "Question", "scene_questions"]

KINDS = ("present", "appeared", "scene_change", "count", "first")
ANSWERS = ("no", "yes", "quarter-1", "quarter-2", "quarter-3", "quarter-4", "no-change",
           "0", "1", "2", "3", "x-first", "y-first")
KIND_ANSWERS: dict[str, tuple[int, ...]] = {
    "present": (0, 1), "appeared": (0, 1), "scene_change": (2, 3, 4, 5, 6),
    "count": (7, 8, 9, 10), "first": (11, 12),
}
WINDOWS = (10, 20)  # frames: 2 s and 4 s at 5 fps


@dataclass(frozen=True)
class Question:
    """One question about one stream.

    Attributes:
        kind: one of :data:`KINDS`.
        t: the frame it is asked at (the answerer sees frames ``0..t``).
        window: ``appeared``'s look-back in frames (0 for other kinds).
        x, y: the objects it names (None where the kind names fewer).
        answer: index into :data:`ANSWERS`.
    """

    kind: str
    t: int
    window: int
    x: str | None
    y: str | None
    answer: int

    def text(self) -> str:
        return {
            "present": f"Is the {self.x} in view now?",
            "appeared": f"Did the {self.x} appear in the last {self.window} frames?",
            "scene_change": "When did the scene change?",
            "count": "How many different objects appeared?",
            "first": f"Which came first, the {self.x} or the {self.y}?",
        }[self.kind]


def _yes_no(rng, scene: Scene, positives: set[str], t: int, kind: str, window: int) -> Question:
    others = [n for n in scene_objects(scene) if n not in positives]
    in_scene = [n for n in scene.distinct_objects() if n not in positives]
    if positives and rng.random() < 0.5:
        return Question(kind, t, window, str(rng.choice(sorted(positives))), None, 1)
    pool = in_scene if in_scene and rng.random() < 0.6 else others
    if not pool:  # every object of a small split is in view: name one of another split
        pool = [n for n in (scene.imagery.object_names() if scene.imagery else OBJECTS) if n not in positives]
    if not pool:  # a user's few objects, every one in view: the question can only be answered yes
        return Question(kind, t, window, str(rng.choice(sorted(positives))), None, 1)
    return Question(kind, t, window, str(rng.choice(sorted(pool))), None, 0)


def scene_questions(scene: Scene, rng: np.random.Generator, per_kind: int = 6,
                    kinds: tuple[str, ...] = KINDS) -> list[Question]:
    """Questions of ``kinds`` about ``scene``: ``per_kind`` of ``present`` and of ``appeared`` (random
    times and objects, about half answered yes), and one each of ``scene_change``, ``count`` and
    ``first`` (where two objects appeared at different times), all three asked at the last frame.
    The random draws are the same whatever ``kinds`` holds (a kind left out is drawn and dropped)."""
    qs = _all_questions(scene, rng, per_kind)
    return [q for q in qs if q.kind in kinds]


def _all_questions(scene: Scene, rng: np.random.Generator, per_kind: int) -> list[Question]:
    T = scene.frames
    qs: list[Question] = []
    for _ in range(per_kind):
        t = int(rng.integers(2, T))
        qs.append(_yes_no(rng, scene, scene.in_view(t), t, "present", 0))
    for _ in range(per_kind):
        w = int(rng.choice(WINDOWS))
        t = int(rng.integers(min(w, T - 1), T))
        seen = {a.name for a in scene.appearances if a.start <= t and a.end - 1 >= t - w + 1}  # overlaps t-w+1..t
        qs.append(_yes_no(rng, scene, seen, t, "appeared", w))
    last = T - 1
    change = 6 if scene.cut is None else 2 + min(3, scene.cut * 4 // T)
    qs.append(Question("scene_change", last, 0, None, None, change))
    qs.append(Question("count", last, 0, None, None, 7 + len(scene.distinct_objects())))
    firsts = {n: scene.first_seen(n) for n in scene.distinct_objects()}
    names = sorted(firsts)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:] if firsts[a] != firsts[b]]
    if pairs:
        a, b = pairs[int(rng.integers(len(pairs)))]
        if rng.random() < 0.5:
            a, b = b, a
        qs.append(Question("first", last, 0, a, b, 11 if firsts[a] < firsts[b] else 12))
    return qs
