"""Few-shot classification: `python tools/fewshot.py ARGS` is `pointmap finetune fewshot ARGS` (pointmap/cli/fewshot.py)."""
from _common import REPO  # noqa: F401  (puts the checkout on sys.path when pointmap is not installed)

from pointmap.cli.fewshot import main

if __name__ == "__main__":
    main()
