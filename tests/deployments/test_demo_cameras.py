"""`streamdycoke demo`'s cameras: N of one source, or scripted scenes only when no source is given (offline,
with one camera the LLM can read beside them)."""


def test_demo_makes_n_cameras_of_one_source_and_scripted_scenes_only_without_sources(tmp_path):
    from tools.demo import demo_cameras

    cams, scenes = demo_cameras(16, ["a.mp4"], llm=False, tmp=tmp_path)
    assert [c.id for c in cams] == [f"cam{i}" for i in range(16)] and {c.source for c in cams} == {"a.mp4"}
    assert scenes == {} and not any(c.standing for c in cams)
    cams, _ = demo_cameras(None, ["a.mp4", "b.mp4", "c.mp4"], llm=False, tmp=tmp_path)
    assert [c.source for c in cams] == ["a.mp4", "b.mp4", "c.mp4"]
    cams, _ = demo_cameras(4, ["a.mp4", "b.mp4"], llm=False, tmp=tmp_path)
    assert [c.source for c in cams] == ["a.mp4", "b.mp4", "a.mp4", "b.mp4"]


def test_offline_scripted_scenes_come_with_one_camera_the_llm_reads(tmp_path):
    from streamdycoke import EncoderSpec
    from tools.demo import STREET, demo_cameras

    llm = EncoderSpec()
    cams, scenes = demo_cameras(2, None, llm=False, tmp=tmp_path)
    assert [c.id for c in cams] == ["cam0", "cam1", STREET] and set(scenes) == {"cam0", "cam1"}
    street = cams[-1]
    assert street.pipeline_config(llm).encoder.name == llm.name and not street.standing
    assert all(c.pipeline_config(llm).encoder.name == "efficientnet-lite0" for c in cams[:2])
    cams, _ = demo_cameras(2, None, llm=True, tmp=tmp_path)  # with weights the scripted cameras are the LLM's
    assert [c.id for c in cams] == ["cam0", "cam1"]
