"""Test helpers in one place: ``helpers`` (run the real command line, wait for conditions,
``REPO``) and ``engine`` (``EngineEnv``: real engines in a private runtime directory)."""
