"""Classify (or part-segment) your own point clouds: `python tools/predict.py ARGS` is `pointmap predict ARGS`."""
from _common import REPO  # noqa: F401  (puts the checkout on sys.path when pointmap is not installed)

from pointmap.cli.predict import main

if __name__ == "__main__":
    main()
