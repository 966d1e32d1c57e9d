"""Benchmarks: `python tools/benchmark.py ARGS` is `pointmap benchmark ARGS` (pointmap/cli/benchmark.py)."""
from _common import REPO  # noqa: F401  (puts the checkout on sys.path when pointmap is not installed)

from pointmap.cli.benchmark import main

if __name__ == "__main__":
    main()
