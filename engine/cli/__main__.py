"""``python -m cachewatch.engine.cli``: the same command line as the ``cachewatch`` script."""

import sys

from . import main

sys.exit(main())
