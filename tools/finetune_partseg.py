"""Part segmentation: `python tools/finetune_partseg.py ARGS` is `pointmap finetune partseg ARGS` (pointmap/cli/finetune.py)."""
from _common import REPO  # noqa: F401  (puts the checkout on sys.path when pointmap is not installed)

from pointmap.cli.finetune import partseg as main

if __name__ == "__main__":
    main()
