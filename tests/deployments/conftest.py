"""Shared set-up of the Serve application tests."""

import contextlib

from streamdycoke import EncoderSpec

TINY = EncoderSpec(weights=None)  # the tiny random LLaVA-OneVision (no weights here), for LLM and cameras alike
TOKEN = "test-token-0123456789"  # the bearer token of the apps these tests serve


@contextlib.contextmanager
def served_app(stack, name: str):
    """The Serve app (tiny LLM, the stack's Redis, :data:`TOKEN`) run as ``name`` at ``/``, and a camera
    supervisor whose cameras use its LLM; yields the supervisor, then deletes the app and stops the cameras."""
    from ray import serve

    from actors.supervisor import CameraSupervisor
    from deployments.app import build_app
    from deployments.config import AppArgs

    serve.run(build_app(AppArgs(model=TINY, redis=stack.redis, num_cpus=0.25, api_token=TOKEN)), name=name,
              route_prefix="/")
    sup = CameraSupervisor(stack.kafka, stack.redis, TINY,
                           llm_handle=serve.get_deployment_handle("LLMDeployment", app_name=name))
    try:
        yield sup
    finally:
        sup.shutdown()  # the cameras first, while the LLM still answers their standing queries' rounds in flight
        serve.delete(name)
