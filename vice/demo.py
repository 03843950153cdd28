"""The README's first command: a short CPU training run on the built-in synthetic scenes."""

from __future__ import annotations

import sys


def main() -> None:
    """Train the ``demo`` experiment; extra ``key=value`` arguments are Hydra overrides."""
    from vice.app import run_app

    sys.argv = [sys.argv[0], "experiment=demo", *sys.argv[1:]]
    run_app("train")


if __name__ == "__main__":
    main()
