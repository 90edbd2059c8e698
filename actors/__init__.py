"""Ray actors, one per camera (issue 3): thin shells around :class:`streamdycoke.FramePipeline`."""
