"""The ``cachewatch`` entry point: the engine's commands plus the dashboard's.

Textual is imported only when a dashboard is actually opened, so headless
commands start fast and work on machines without a terminal.
"""

from __future__ import annotations

import sys
from typing import Sequence

from cachewatch.engine.cli import build_parser, run_parsed


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_parsed(args, parser)


if __name__ == "__main__":
    sys.exit(main())
