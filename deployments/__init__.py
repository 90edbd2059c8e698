"""Ray Serve application batching cached tokens into LLM replicas (issue 3)."""
