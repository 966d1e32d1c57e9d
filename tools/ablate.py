"""The ablation: `python tools/ablate.py ARGS` is `pointmap ablate ARGS` (pointmap/cli/ablate.py)."""
from _common import REPO  # noqa: F401  (puts the checkout on sys.path when pointmap is not installed)

from pointmap.cli.ablate import main

if __name__ == "__main__":
    main()
