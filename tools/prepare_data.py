"""Data roots: `python tools/prepare_data.py ARGS` is `pointmap prepare-data ARGS` (pointmap/cli/prepare_data.py)."""
import sys

from _common import REPO  # noqa: F401  (puts the checkout on sys.path when pointmap is not installed)

from pointmap.cli.prepare_data import main

if __name__ == "__main__":
    sys.exit(main())
