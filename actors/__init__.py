"""Ray actors, one per camera: thin shells around :class:`actors.camera.CameraWorker`, which drives one stream's :class:`streamdycoke.FramePipeline`."""
