"""Self-supervised pretraining: `python tools/pretrain.py ARGS` is `pointmap pretrain ARGS` (pointmap/cli/pretrain.py)."""
from _common import REPO  # noqa: F401  (puts the checkout on sys.path when pointmap is not installed)

from pointmap.cli.pretrain import main

if __name__ == "__main__":
    main()
