"""ModelNet40 classification: `python tools/finetune_modelnet.py ARGS` is `pointmap finetune modelnet ARGS`."""
from _common import REPO  # noqa: F401  (puts the checkout on sys.path when pointmap is not installed)

from pointmap.cli.finetune import modelnet as main

if __name__ == "__main__":
    main()
