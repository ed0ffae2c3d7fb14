import sys

from .process import daemon_main

sys.exit(daemon_main())
