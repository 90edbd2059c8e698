"""Standing queries as plain classes: rules, hysteresis, the window anchor, triggers and alert records
(the store and the answerer are stand-ins here; tests/deployments/test_app.py runs them for real)."""

import json
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from actors.alerts import ALERT_SCHEMA, AlertSinks
from actors.config import CameraConfig
from actors.standing import AlertRule, Answer, Hysteresis, StandingQueries, StandingQuery, WindowAnchor


@pytest.mark.parametrize("rule, answer, expected", [
    ({"kind": "yes_no"}, "Yes, a person is at the door.", (True, None)),
    ({"kind": "yes_no"}, "no", (False, None)),
    ({"kind": "yes_no", "expect": "no"}, "No.", (True, None)),
    ({"kind": "yes_no"}, "Perhaps", (None, None)),
    ({"kind": "match", "pattern": r"fire|smoke"}, "I see SMOKE near the door", (True, None)),
    ({"kind": "match", "pattern": r"fire|smoke"}, "all clear", (False, None)),
    ({"kind": "threshold", "above": 3}, "There are 5 people.", (True, 5.0)),
    ({"kind": "threshold", "above": 3, "below": 10}, "12", (False, 12.0)),
    ({"kind": "threshold", "below": 1}, "none that I can see", (None, None)),
])
def test_rules_turn_answers_into_conditions(rule, answer, expected):
    assert AlertRule(**rule).evaluate(answer) == expected


@pytest.mark.parametrize("rule, words", [
    ({"kind": "match"}, "needs a pattern"),
    ({"kind": "match", "pattern": "("}, "not a regular expression"),
    ({"kind": "threshold"}, "above and/or below"),
    ({"kind": "yes_no", "above": 2}, "belong to a threshold rule"),
    ({"kind": "sometimes"}, "kind"),
])
def test_bad_rules_are_refused_by_name(rule, words):
    with pytest.raises(ValidationError, match=words):
        AlertRule(**rule)


def test_camera_config_refuses_standing_queries_that_cannot_run():
    q = {"id": "door", "prompt": "Is anyone at the door?", "rule": {"kind": "yes_no"}}
    with pytest.raises(ValidationError, match="every_s and/or on_scene_change"):
        CameraConfig(id="c", standing=[q])
    with pytest.raises(ValidationError, match="unique"):
        CameraConfig(id="c", standing=[{**q, "every_s": 1}, {**q, "every_s": 2}])
    with pytest.raises(ValidationError, match="no frame sampler"):
        CameraConfig(id="c", sampler=None, standing=[{**q, "on_scene_change": True}])
    with pytest.raises(ValidationError, match="efficientnet-lite0"):
        CameraConfig(id="c", standing=[{**q, "every_s": 1, "answerer": "event-qa"}])
    with pytest.raises(ValidationError, match="extra"):
        CameraConfig(id="c", standing=[{**q, "every_s": 1, "evry_s": 2}])
    ok = CameraConfig(id="c", standing=[{**q, "every_s": 2.5, "on_scene_change": True}])
    assert ok.standing[0].slide == 5.0 and ok.standing[0].clear_after == 2


def test_hysteresis_raises_once_for_a_persisting_condition_and_clears_after_quiet_rounds():
    h = Hysteresis(raise_after=2, clear_after=3)
    seen = [h.update(c) for c in [True, False, True, True, True, True, False, False, True, False, False, False, True]]
    assert seen == [None, None, None, "raised", None, None, None, None, None, None, None, "cleared", None]
    assert Hysteresis(active=True).update(True) is None  # restored after a restart: no second alert


def test_the_window_start_holds_until_the_slide_then_moves():
    a = WindowAnchor(window_s=10, slide_s=5)
    assert [a.window(t) for t in (100, 103, 105, 105.5, 110, 111)] == [90, 90, 90, 95.5, 95.5, 101]


class _Store:
    def __init__(self):
        self.newest = None

    def newest_timestamp(self, cam):
        return self.newest

    def reader_window_raw(self, cam, start=None):
        """One keyframe at the window's start, as wire bytes (what a real store forwards)."""
        import torch

        from streamdycoke.segment import TokenSegment, encode_segment

        seg = TokenSegment(cam, 0, start, torch.arange(4), torch.zeros(4, 2, dtype=torch.float16), True, (2, 2))
        return [encode_segment(seg)] if self.newest is not None else []


def _runner(answers, **q):
    store, published, asked = _Store(), [], []

    def answer(camera, query, segments, key):
        asked.append(key)
        return Answer(answers.pop(0), visual_tokens=7)

    query = StandingQuery(id="door", prompt="anyone?", rule={"kind": "yes_no"}, **q)
    clock = [1000.0]
    r = StandingQueries("cam", [query], store, {"llm": answer}, published.append, clock=lambda: clock[0])
    return r, store, published, asked, clock


def test_a_period_and_scene_cuts_trigger_rounds_and_alerts_carry_schema_v1():
    r, store, published, asked, clock = _runner(["no", "yes", "yes", "no", "no", "no"], every_s=2.0,
                                                on_scene_change=True)
    assert r.step() == [] and asked == []  # nothing due yet
    clock[0] = 1002.0
    assert r.step() == [] and asked == []  # due, but no frames cached: no round
    store.newest = 1001.9
    clock[0] = 1004.5  # two periods passed: one round, not a backlog of two
    r.step()
    assert len(asked) == 1 and r.latencies[-1] == ("door", "period", 0.5)
    r.scene_cut(1004.6)
    r.scene_cut(1004.8)  # two cuts before the round: one round, timed from the first
    clock[0] = 1004.9
    [alert] = r.step()
    assert r.latencies[-1][:2] == ("door", "scene_change") and abs(r.latencies[-1][2] - 0.3) < 1e-9
    assert alert["state"] == "raised" and alert["trigger"] == "scene_change" and alert["window"]["visual_tokens"] == 7
    jsonschema.validate(alert, ALERT_SCHEMA)
    assert json.loads(Path("docs/alert.schema.json").read_text()) == ALERT_SCHEMA, "the documented schema is the code's"
    clock[0] = 1006.5
    assert r.step() == []  # still yes: no second alert
    for t in (1008.5, 1010.5):  # clear_after 2
        clock[0] = t
        out = r.step()
    assert [a["state"] for a in published] == ["raised", "cleared"] and out[0]["state"] == "cleared"
    assert set(asked) == {"cam|10|5"}  # one window, one kept cache


def test_a_failing_sink_keeps_alerts_and_sends_them_when_it_returns():
    class Flaky:
        def __init__(self):
            self.up, self.got = False, []

        def add_alert(self, record):
            if not self.up:
                raise ConnectionError("redis down")
            self.got.append(record["id"])

    store = Flaky()
    sinks = AlertSinks(kafka=None, store=store)
    sinks({"id": "a", "camera": "c"})
    sinks({"id": "b", "camera": "c"})
    assert store.got == [] and len(sinks.pending["redis"]) == 2
    store.up = True
    sinks.retry()
    assert store.got == ["a", "b"] and not sinks.pending["redis"]


def test_a_round_in_flight_when_the_statistics_reset_is_not_counted_after_it():
    store, published = _Store(), []
    store.newest = 999.0
    clock = [1000.0]
    r = None

    def answer(camera, query, segments, key):
        if key is not None:  # the first round, asked with reuse on: the benchmark resets while it is answered
            r.reuse = False
            r.reset_stats()
        return Answer("no", visual_tokens=7, reused_tokens=5 if key else 0)

    query = StandingQuery(id="door", prompt="anyone?", rule={"kind": "yes_no"}, every_s=2.0)
    r = StandingQueries("cam", [query], store, {"llm": answer}, published.append, clock=lambda: clock[0])
    clock[0] = 1002.5
    r.step()
    assert (r.rounds, r.reused_tokens, r.latencies) == (0, 0, [])  # answered after the reset: not counted
    clock[0] = 1004.5
    r.step()
    assert (r.rounds, r.reused_tokens, len(r.latencies)) == (1, 0, 1)


def test_an_alert_about_an_empty_window_is_valid_against_its_schema():
    from actors.alerts import alert_record

    query = StandingQuery(id="door", prompt="anyone?", rule={"kind": "yes_no"}, every_s=2.0)
    record = alert_record("cam", query, "raised", Answer("yes", 0), 1.0, "period", 10.0, 10.5, [])
    assert record["window"]["start_ts"] is None and record["window"]["frames"] == 0
    jsonschema.validate(record, ALERT_SCHEMA)
