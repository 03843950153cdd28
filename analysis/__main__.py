"""``python -m analysis``: the same command as ``vice-tables``."""

import sys

from analysis.tables import main

sys.exit(main())
