"""``LLMDeployment``: the LLM replicas of the Serve app, around :class:`deployments.llm.LLMEngine`.

Requests are batched with ``@serve.batch``, the batch sized by visual tokens, not by request count; a
streamed answer (``generate_stream``) is generated alone, token by token; a standing query's request
carries its camera as Serve's multiplexed model id and is answered from the KV cache this replica keeps
for it. Replicas, CPUs and GPUs per replica and ``autoscaling_config`` come from the app args
(:func:`deployments.app.build_app`).
"""

import asyncio

from ray import serve

from actors.llm_request import LLMRequest

from .config import AppArgs
from .llm import LLMEngine

__all__ = ["LLMDeployment"]


class _CameraCaches:
    """What Serve's model multiplexing holds for a camera on a replica: that camera's kept KV caches.
    Serve routes the camera's requests here while it is loaded, and unloads the least recently used
    camera past ``max_num_models_per_replica``; its caches go with it."""

    def __init__(self, engine: LLMEngine, camera: str) -> None:
        self.engine, self.camera = engine, camera

    def __del__(self) -> None:
        self.engine.forget(f"{self.camera}|")


@serve.deployment
class LLMDeployment:
    """The LLM replicas. Requests are batched by the visual tokens they bring (``AppArgs.max_batch_tokens``),
    counted as the answer reports them (:meth:`LLMEngine.visual_tokens`).

    A request with a ``reuse_key`` (``camera|window``) is answered by incremental prefill from the KV
    cache this replica keeps for it; its caller sends it with ``multiplexed_model_id=camera``, so Serve
    routes the camera's requests to the replica that holds its caches (once it has learned where that is
    from the replicas' reports: a camera's first requests may land on another replica, which rebuilds)."""

    def __init__(self, args: AppArgs) -> None:
        from actors.metrics import QueryMetrics, replica_node_gauge

        replica_node_gauge("LLMDeployment")
        self.engine = LLMEngine(args.model, kept_windows=args.kept_windows)
        self.replica = serve.get_replica_context().replica_id.unique_id  # answers say which replica (and cache)
        self.metrics = QueryMetrics()
        self._generate.set_max_batch_size(args.max_batch_tokens)
        self._generate.set_batch_wait_timeout_s(args.batch_wait_timeout_s)

    async def generate(self, req: LLMRequest) -> dict:
        req.num_tokens = self.engine.visual_tokens(req)
        if req.reuse_key is not None:
            camera = serve.get_multiplexed_model_id() or req.camera
            await self._camera(camera)  # marks the camera as held here (Serve routes by it)
            if not req.reuse_key.startswith(f"{camera}|"):
                raise ValueError(f"reuse_key {req.reuse_key!r} is not camera {camera!r}'s")
        return {**await self._generate(req), "replica": self.replica}

    async def generate_stream(self, req: LLMRequest):
        """One request's answer token by token (call with ``handle.options(stream=True)``): dicts
        ``{"delta": text}`` as tokens are generated, then ``{"result": {...}}``. Generated alone, not in a
        batch: its tokens are sent as they come. The generation runs in a worker thread; this replica's
        event loop stays free for the batches."""
        req.num_tokens = self.engine.visual_tokens(req)
        self.metrics.batch(1, req.num_tokens)
        it = self.engine.stream(req)
        while (item := await asyncio.to_thread(next, it, None)) is not None:
            yield {"result": item["result"].__dict__} if "result" in item else item

    @serve.multiplexed(max_num_models_per_replica=64)
    async def _camera(self, camera: str) -> _CameraCaches:
        return _CameraCaches(self.engine, camera)

    # sizes come from AppArgs (set in __init__), not from here
    @serve.batch(batch_size_fn=lambda reqs: sum(r.num_tokens for r in reqs))
    async def _generate(self, reqs: list[LLMRequest]) -> list[dict]:
        self.metrics.batch(len(reqs), sum(r.num_tokens for r in reqs))
        return [r.__dict__ for r in self.engine.answer(reqs)]
