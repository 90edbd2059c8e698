"""``streamdycoke demo``: the whole system on one machine with embedded defaults.

An embedded broker, Redis, a local Ray and the Serve app (:class:`~tools.stack.LocalStack`), N cameras
looping in real time, and :func:`deployments.system.run_pipeline`'s live table, question and drain:
the loop ``streamdycoke run`` runs against existing services.

The demo's cameras (unless sources are given) film scripted scenes (:func:`demo_scenes`): an object
walks through a still scene at known times, and each camera has one standing question about it
("Is the cat in view?"). Offline, without LLM weights, the question is answered by the event-QA model
over ``efficientnet-lite0`` tokens (``actors.answerers``); with weights (``--model``), by the LLM. The
result lists every alert beside the scene's ground truth, so a run shows whether its alerts were true.
Offline, one more camera (:data:`STREET`, the LLM's own encoder) is there for the demo's question and the
console's question box, which the LLM cannot answer over efficientnet-lite0 tokens.
"""

import sys
import tempfile
from pathlib import Path

from actors.config import CameraConfig, IngestSettings
from deployments.config import AppArgs
from deployments.system import DEFAULT_QUESTION, report, run_pipeline
from streamdycoke import EncoderSpec

__all__ = ["STREET", "demo_cameras", "demo_scenes", "judge_alerts", "llm_has_weights", "run_demo"]

# (object, enters at s, leaves at s, background) of the demo cameras' scripted scenes, 16 s each, looped
DEMO_SCENES = (("cat", 4.0, 11.0, "brick"), ("astronaut", 6.0, 12.0, "grass"), ("cameraman", 3.0, 9.0, "page"),
               ("moon", 5.0, 13.0, "text"))
DEMO_SCENE_S = 16.0


def demo_scenes(n: int, tmp: Path) -> list[dict]:
    """``n`` scripted camera scenes as 5-fps H.264 files, with their ground truth: ``{"source", "object",
    "in_view_s": [enter, leave], "loop_s"}`` (``loop_s``: how far apart a looped file's passes are)."""
    from streamdycoke.evalqa.scenes import FPS, render, scripted_scene
    from streamdycoke.video import write_video

    out = []
    for i in range(n):
        obj, a, b, bg = DEMO_SCENES[i % len(DEMO_SCENES)]
        scene = scripted_scene(obj, a, b, seconds=DEMO_SCENE_S, background=bg, lane=1 + (i // len(DEMO_SCENES)) % 2,
                               seed=i)
        path = write_video(tmp / f"cam{i}.mp4", (render(scene, f) for f in range(scene.frames)), FPS)
        # ingest starts a looped file's next pass 1/30 s after its last frame (actors.ingest)
        out.append({"source": str(path), "object": obj, "in_view_s": [a, b],
                    "loop_s": (scene.frames - 1) / FPS + 1.0 / 30})
    return out


def llm_has_weights(model: EncoderSpec) -> bool:
    """Whether the LLM's weights are on this machine (a local path or a cached hub id): the demo is offline otherwise."""
    if not model.weights:
        return False
    try:
        from transformers import LlavaOnevisionConfig

        LlavaOnevisionConfig.from_pretrained(model.weights, revision=model.revision, local_files_only=True)
        return True
    except (OSError, ValueError):
        return False


def demo_camera(i: int, scene: dict, llm: bool) -> CameraConfig:
    """Camera ``cam{i}`` filming ``scene``, with one standing question about its object: answered by the
    LLM when it has weights (``llm``), else by the event-QA model over efficientnet-lite0 tokens."""
    obj = scene["object"]
    standing = {"id": f"{obj}-in-view", "every_s": 1.0, "on_scene_change": True, "window_s": 8.0,
                "rule": {"kind": "yes_no"}, "raise_after": 2, "clear_after": 2}
    if llm:
        standing.update(prompt=f"Is there a {obj} in view? Answer yes or no.", answerer="llm")
        return CameraConfig(id=f"cam{i}", source=scene["source"], standing=[standing])
    standing.update(prompt=f"Is the {obj} in view?", answerer="event-qa")
    # every frame of the 5-fps scene is judged (min_fps 5): the event-QA model was trained on 5-fps streams,
    # and an object leaving changes too little of the frame for the default change threshold to notice at
    # once; what a frame repeats is still dropped by the stream's token policy
    return CameraConfig(id=f"cam{i}", source=scene["source"], encoder=EncoderSpec(name="efficientnet-lite0"),
                        sampler={"min_fps": 5.0}, standing=[standing])


STREET = "street"  # the offline demo's camera whose tokens the LLM reads (its question box answers)


def demo_cameras(cameras: int | None, sources: list[str] | None, llm: bool, tmp: Path
                 ) -> tuple[list[CameraConfig], dict[str, dict]]:
    """The demo's cameras and the scripted scenes among them: ``cameras`` cameras of the ``sources`` in turn
    (default: one per source), or without sources, of scripted scenes (default 2) rendered under ``tmp``.

    Offline (no LLM weights, ``llm`` false) the scripted cameras' tokens are efficientnet-lite0's, which
    the LLM cannot read; one more camera, :data:`STREET` (a synthetic street at 10 fps, the LLM's own
    encoder), is then added so that the demo's question and the console's question box get an answer."""
    if sources:
        return [CameraConfig(id=f"cam{i}", source=sources[i % len(sources)])
                for i in range(cameras or len(sources))], {}
    made = demo_scenes(cameras or 2, tmp)
    cams = [demo_camera(i, sc, llm) for i, sc in enumerate(made)]
    scenes = {c.id: sc for c, sc in zip(cams, made)}
    if not llm:
        from streamdycoke.video import make_camera_video

        street = make_camera_video(tmp / f"{STREET}.mp4", seconds=12, fps=10, seed=7)
        cams.append(CameraConfig(id=STREET, source=str(street)))
    return cams, scenes


def run_demo(cameras: int | None = None, sources: list[str] | None = None, duration: float | None = None,
             question: str = DEFAULT_QUESTION, window_s: float = 10.0, model: EncoderSpec | None = None,
             json_out: bool = False, screenshots: str | None = None) -> dict:
    """The whole pipeline on this machine with embedded defaults (:class:`~tools.stack.LocalStack`),
    looping in real time: ``cameras`` cameras of the ``sources`` in turn (default: one per source), or,
    without sources, of scripted scenes (:func:`demo_scenes`, each with a standing question; default 2;
    offline, with the :data:`STREET` camera beside them). ``screenshots``: a folder for pictures of the console
    (:mod:`tools.screenshots`), taken once there are snapshots and an alert."""
    from .stack import LocalStack

    from pydantic import SecretStr

    say = (lambda *a: print(*a, file=sys.stderr)) if json_out else print
    app = AppArgs(model=model or EncoderSpec(), num_cpus=0.25)
    llm = llm_has_weights(app.model)
    with tempfile.TemporaryDirectory(prefix="streamdycoke-demo-") as tmp, LocalStack() as stack:
        say(f"API token (send it as 'Authorization: Bearer <token>'): {stack.api_token}")
        if not sources:
            say(f"making {cameras or 2} scripted camera scene(s) ...")
        cams, scenes = demo_cameras(cameras, sources, llm, Path(tmp))
        app = app.model_copy(update={"redis": stack.redis, "api_token": SecretStr(stack.api_token)})
        if screenshots:
            from .screenshots import take_when_ready

            take_when_ready(stack.api, stack.api_token, [c.id for c in cams], screenshots, say)
        result = run_pipeline(stack.kafka, app, cams, IngestSettings(loop=True, realtime=True), stack.api, stack.metrics_url,
                      duration, question, window_s, json_out, local=True)
        for cam, sc in scenes.items():  # the ground truth beside the alerts
            c = result["cameras"].get(cam)
            if c is not None:
                c["scene"] = {"object": sc["object"], "in_view_s": sc["in_view_s"], "loop_s": sc["loop_s"],
                              "start_ts": c.pop("ingest_start_ts", None)}
    report(result, json_out, more=scene_lines)  # after everything stopped: Ray's shutdown chatter comes before it
    return result


ALERT_TOLERANCE_S = 4.0  # raise_after 2 rounds of 1 s, the answer's lag behind the scene, and the round's latency


def judge_alerts(c: dict, tolerance_s: float = ALERT_TOLERANCE_S) -> list[bool]:
    """For a scripted camera's result ``c``: whether each alert is true to the scene, i.e. a raise within
    ``tolerance_s`` after the object entered (in the looped file's time, read at the newest frame the
    answer saw), a clear within ``tolerance_s`` after it left."""
    sc = c["scene"]
    enter, leave = sc["in_view_s"]
    out = []
    for a in c["alerts"]:
        v = (a["window_end_ts"] - sc["start_ts"]) % sc["loop_s"]
        edge = enter if a["state"] == "raised" else leave
        out.append(edge <= v <= edge + tolerance_s)
    return out


def scene_lines(c: dict) -> list[str]:
    """A scripted camera's alerts judged against its scene: the lines the demo prints under it."""
    if "scene" not in c:
        return []
    lines: list[str] = []
    sc = c["scene"]
    true = judge_alerts(c)
    lines.append(f"  standing: {c['standing'][0]!r}; the {sc['object']} is in view {sc['in_view_s'][0]:g}-"
                 f"{sc['in_view_s'][1]:g} s of every {sc['loop_s']:.1f} s; {len(true)} alerts, {sum(true)} true")
    for a, ok in zip(c["alerts"], true):
        v = (a["window_end_ts"] - sc["start_ts"]) % sc["loop_s"]
        lines.append(f"    {a['state']:<8} at scene time {v:5.1f} s, {1e3 * a['latency_s']:.0f} ms after its "
                     f"{a['trigger']} trigger: {'true' if ok else 'FALSE'}")
    return lines
