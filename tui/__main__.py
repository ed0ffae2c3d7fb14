import sys

from cachewatch.tui.cli import main

sys.exit(main())
