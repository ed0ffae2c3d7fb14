"""The fleet tests use the real redis-server fixture of tests/conftest.py (``redis_server``)."""
