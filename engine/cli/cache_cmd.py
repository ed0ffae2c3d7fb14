"""``cachewatch cache stats|ls|log|evict``: look at and trim a managed cache."""
