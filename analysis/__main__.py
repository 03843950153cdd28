"""``python -m analysis``: the same command as ``vice-tables``."""

import sys

from analysis.cli import main

sys.exit(main())
