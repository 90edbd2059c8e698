"""`streamdycoke demo`'s cameras: N of one source, or scripted scenes only when no source is given."""


def test_demo_makes_n_cameras_of_one_source_and_scripted_scenes_only_without_sources(tmp_path):
    from tools.demo import demo_cameras

    cams, scenes = demo_cameras(16, ["a.mp4"], llm=False, tmp=tmp_path)
    assert [c.id for c in cams] == [f"cam{i}" for i in range(16)] and {c.source for c in cams} == {"a.mp4"}
    assert scenes == {} and not any(c.standing for c in cams)
    cams, _ = demo_cameras(None, ["a.mp4", "b.mp4", "c.mp4"], llm=False, tmp=tmp_path)
    assert [c.source for c in cams] == ["a.mp4", "b.mp4", "c.mp4"]
    cams, _ = demo_cameras(4, ["a.mp4", "b.mp4"], llm=False, tmp=tmp_path)
    assert [c.source for c in cams] == ["a.mp4", "b.mp4", "a.mp4", "b.mp4"]
