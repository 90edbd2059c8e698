"""What a name in the pipeline may be: a camera's id, a standing query's id (one owner for the pattern
that the camera config, the query models, the gateway, the OpenAI surface and the console all check)."""

__all__ = ["CAMERA_ID_MAX", "ID_PATTERN"]

ID_PATTERN = r"^[A-Za-z0-9._-]+$"  # letters, digits, dot, underscore, dash: safe in keys, topics, URLs, labels
CAMERA_ID_MAX = 200
