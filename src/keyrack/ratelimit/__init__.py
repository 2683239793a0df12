"""Per-key throttling: the ``Limiter`` contract (``base``), in-process (``memory``), shared
through Redis in grants (``redis``, over the bucket script's wire protocol in ``wire``
and ``bucket.lua``), and per-process limits while Redis is down (``failover``)."""
