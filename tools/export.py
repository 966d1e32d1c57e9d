"""Export a run: `python tools/export.py ARGS` is `pointmap export ARGS` (pointmap/cli/export.py)."""
from _common import REPO  # noqa: F401  (puts the checkout on sys.path when pointmap is not installed)

from pointmap.cli.export import main

if __name__ == "__main__":
    main()
