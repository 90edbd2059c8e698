"""The Ray Serve application: a gateway, LLM replicas batched by visual tokens, and (on a cluster) the camera fleet."""
