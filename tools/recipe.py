"""What a config trains: `python tools/recipe.py ARGS` is `pointmap recipe ARGS` (pointmap/cli/recipe.py)."""
from _common import REPO  # noqa: F401  (puts the checkout on sys.path when pointmap is not installed)

from pointmap.cli.recipe import main

if __name__ == "__main__":
    main()
