"""``python -m cachewatch.engine.daemon``: the detached engine process (see ``process.daemon_main``)."""

import sys

from .process import daemon_main

if __name__ == "__main__":
    sys.exit(daemon_main())
