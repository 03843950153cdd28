"""``python -m vice.evaluate``: the same as ``vice-eval``."""

from vice.evaluate.app import main

main()
