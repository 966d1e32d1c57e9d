"""What the scripts in tools/ share: pointmap importable from a checkout that was not installed, and the names
of :mod:`pointmap.cli.common` (where the commands' code lives) for scripts that import them from here."""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:
    import pointmap  # noqa: F401
except ImportError:  # a checkout used without `pip install -e .`
    sys.path.insert(0, REPO)

from pointmap.cli.common import CKPT_HELP, build_parser, finetune, load, main  # noqa: E402,F401
from pointmap.config import configs_dir  # noqa: E402


def cfg_path(name: str) -> str:
    """The shipped config ``name`` (``map_demo.yaml``, ``point_mae/pretrain.yaml``) as a file path."""
    return os.path.join(configs_dir(), name)
