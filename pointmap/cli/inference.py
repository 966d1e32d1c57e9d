"""What ``pointmap predict`` and ``pointmap embed`` share: the model and input flags, the file list, the progress
bar, per-file errors (one ``error:`` line each, the other files still done, exit 2 at the end)."""
import argparse
import sys

from tqdm import tqdm

from ..data.io import READ_EXTENSIONS, find_point_files
from ..errors import UserError, add_debug_flag, one_line

MODEL_HELP = ("hf-hub:owner/repo[@revision], a published entry (python -c 'import pointmap; "
              "print(pointmap.list_pretrained())'), a folder written by pointmap export, a pointmap run folder or one "
              "of its checkpoints")


def parser(description: str, epilog: str, prog=None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="point or mesh files, or folders (every readable file under them, recursively)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    p.add_argument("--batch-size", type=int, default=1,
                   help="clouds per forward pass (default 1: some presets' outputs depend on the rest of the batch)")
    p.add_argument("--seed", type=int, default=0, help="seeds the sampling of each file (default 0)")
    add_debug_flag(p)
    return p


class Errors:
    """``on_error`` for pointmap.predict / embed / segment: one ``error:`` line per failed file, kept for the exit
    code and the output files."""

    def __init__(self):
        self.failed = {}

    def __call__(self, name: str, error: Exception) -> None:
        message = one_line(error)
        self.failed[name] = message if name in message else f"{name}: {message}"
        tqdm.write(f"error: {self.failed[name]}", file=sys.stderr)  # above the progress bar, when one shows

    @property
    def code(self) -> int:
        return 2 if self.failed else 0


def inputs(paths):
    """The files to read, as strings, in order (folders walked recursively, sorted); none at all is an error."""
    files = [str(p) for p in find_point_files(paths)]
    if not files:
        raise UserError(f"no point or mesh files ({', '.join(READ_EXTENSIONS)}) under {', '.join(map(str, paths))}")
    return files


def progress():
    """A tqdm bar over the files when stderr is a terminal, else None."""
    if not sys.stderr.isatty():
        return None
    return lambda items: tqdm(items, unit="file", file=sys.stderr, leave=False)
