"""The Ray Serve application: ``build_app(args) -> Application``, a module per deployment.

- ``Gateway`` (:mod:`deployments.gateway`): the HTTP ingress, the native and OpenAI-compatible APIs.
- ``LLMDeployment`` (:mod:`deployments.llm_deployment`): the LLM replicas, batched by visual tokens.
- ``EncoderDeployment`` (:mod:`deployments.encoder`, with ``encoder`` args): the vision tower, frames of
  every camera batched into one forward pass.
- ``CameraFleet`` (:mod:`deployments.fleet`, with ``fleet`` args, as on Kubernetes): owns the camera
  actors and keeps them matching the camera list.

A Kubernetes ``serveConfigV2`` reaches it through ``import_path: deployments.app:build_app``.
Settings reach every deployment as the :class:`~deployments.config.AppArgs` object itself.
"""

from typing import Any

from ray.serve import Application

from .config import AppArgs
from .fleet import CameraFleet
from .gateway import Gateway
from .llm_deployment import LLMDeployment

__all__ = ["build_app"]


def build_app(args: dict | AppArgs | None = None) -> Application:
    """The Serve application for ``serve run`` / ``serveConfigV2`` (``deployments.app:build_app``)."""
    a = args if isinstance(args, AppArgs) else AppArgs.model_validate(args or {})
    opts: dict[str, Any] = {"ray_actor_options": {"num_cpus": a.num_cpus, "num_gpus": a.num_gpus,
                                                  **({"resources": a.resources} if a.resources else {})}}
    if a.autoscaling_config:
        opts["autoscaling_config"] = a.autoscaling_config
    else:
        opts["num_replicas"] = a.num_replicas
    llm = LLMDeployment.options(**opts).bind(a)
    encoder = None
    if a.encoder is not None:
        from .encoder import EncoderDeployment

        e = a.encoder
        eopts: dict[str, Any] = {"ray_actor_options": {"num_cpus": e.num_cpus, "num_gpus": e.num_gpus,
                                                       **({"resources": e.resources} if e.resources else {})}}
        if e.autoscaling_config:
            eopts["autoscaling_config"] = e.autoscaling_config
        else:
            eopts["num_replicas"] = e.num_replicas
        encoder = EncoderDeployment.options(**eopts).bind(a.model, e.max_batch_size, e.batch_wait_timeout_s)
    fleet = None
    if a.fleet is not None:
        fleet = CameraFleet.options(ray_actor_options={"num_cpus": a.fleet.num_cpus}).bind(a, encoder, llm)
    return Gateway.options(ray_actor_options={"num_cpus": a.gateway_num_cpus},
                           max_ongoing_requests=a.gateway_max_ongoing_requests).bind(llm, a, fleet, encoder)
