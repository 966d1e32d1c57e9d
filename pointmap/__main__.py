"""``python -m pointmap <command>``: the ``pointmap`` command (:mod:`pointmap.cli`)."""
import sys

from .cli import main

sys.exit(main(prog="python -m pointmap"))
