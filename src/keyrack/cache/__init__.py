"""Per-key throttling backends: in-process (``MemoryLimiter``) and shared (``RedisLimiter``)."""
