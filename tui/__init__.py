"""cachewatch's dashboard (Textual). The engine (``cachewatch.engine``) never imports this package."""
