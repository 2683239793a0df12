"""The verification cache (``keycache``) and its invalidation across instances (``relay``)."""
