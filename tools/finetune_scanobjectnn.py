"""ScanObjectNN classification: `python tools/finetune_scanobjectnn.py ARGS` is `pointmap finetune scanobjectnn ARGS`."""
from _common import REPO  # noqa: F401  (puts the checkout on sys.path when pointmap is not installed)

from pointmap.cli.finetune import scanobjectnn as main

if __name__ == "__main__":
    main()
