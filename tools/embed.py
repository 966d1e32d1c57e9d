"""Features of your own point clouds, one row per file: `python tools/embed.py ARGS` is `pointmap embed ARGS`."""
from _common import REPO  # noqa: F401  (puts the checkout on sys.path when pointmap is not installed)

from pointmap.cli.embed import main

if __name__ == "__main__":
    main()
