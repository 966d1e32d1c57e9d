"""Reconstruction pictures: `python tools/visualize.py ARGS` is `pointmap visualize ARGS` (pointmap/cli/visualize.py)."""
from _common import REPO  # noqa: F401  (puts the checkout on sys.path when pointmap is not installed)

from pointmap.cli.visualize import main

if __name__ == "__main__":
    main()
