"""Check a data root against the layout of DESIGN.md §5 / data/README.md: what is there (counts) and
every missing file by its full expected path. Used by ``tools/prepare_data.py check``."""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

from ..errors import UserError
from . import mesh, modelnet, scanobjectnn, shapenet, shapenetpart
from .fewshot import FEWSHOT_DIR, NUM_FOLDS, SHOTS, WAYS
from .io import find_dir, read_json, read_lines


@dataclass
class Report:
    name: str
    base: Path
    present: bool = True
    found: Dict[str, int] = field(default_factory=dict)
    missing: List[Path] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.present and not self.missing

    def tally(self, label: str, paths: Iterable[Path]) -> None:
        """Count the paths that exist under ``label``; record the others as missing."""
        n = 0
        for p in paths:
            if p.exists():
                n += 1
            else:
                self.missing.append(p.absolute())
        self.found[label] = self.found.get(label, 0) + n


def _locate(root, rel: str, marker: str, name: str) -> Report:
    base = find_dir(root, rel, marker)
    return Report(name, (base or Path(root) / rel).absolute(), present=base is not None)


def check_shapenet55(root) -> Report:
    rep = _locate(root, shapenet.BASE_DIR, shapenet.SPLIT_DIR, "shapenet55")
    for split in ("train", "test"):
        lst = rep.base / shapenet.SPLIT_DIR / f"{split}.txt"
        rep.tally(f"{split} list", [lst])
        if lst.exists():
            rep.tally(f"{split} clouds (.npy)", (rep.base / shapenet.PC_DIR / n for n in read_lines(lst)))
    return rep


def check_modelnet40(root) -> Report:
    rep = _locate(root, modelnet.TEXT_DIR, "modelnet40_shape_names.txt", "modelnet40")
    rep.tally("shape names", [rep.base / "modelnet40_shape_names.txt"])
    for split in ("train", "test"):
        cache = rep.base / modelnet.cache_name(split)
        lst = rep.base / f"modelnet40_{split}.txt"
        rep.tally(f"{split} list", [lst])
        if cache.exists():
            rep.found[f"{split} cache (.dat)"] = 1
            continue
        if lst.exists():
            ids = read_lines(lst)
            rep.tally(f"{split} shapes (.txt)", (rep.base / i.rsplit("_", 1)[0] / f"{i}.txt" for i in ids))
        rep.notes.append(f"no {cache.name}: reading the text files; `tools/prepare_data.py build-cache` writes it")
    return rep


def check_modelnet40_h5(root) -> Report:
    hdir = modelnet.h5_dir(root) if root is not None and Path(root).is_dir() else None
    rep = Report("modelnet40_h5", (hdir or Path(root) / modelnet.H5_DIR).absolute(), present=hdir is not None)
    for split in ("train", "test"):
        files = sorted(rep.base.glob(f"ply_data_{split}*.h5"))
        rep.tally(f"{split} h5 files", files or [rep.base / f"ply_data_{split}0.h5"])
    return rep


def check_fewshot(root) -> Report:
    rep = _locate(root, FEWSHOT_DIR, f"{WAYS[0]}way_{SHOTS[0]}shot", "modelnet40_fewshot")
    rep.tally("fold pickles", (rep.base / f"{w}way_{s}shot" / f"{f}.pkl"
                               for w in WAYS for s in SHOTS for f in range(NUM_FOLDS)))
    if rep.missing:
        rep.notes.append("`tools/prepare_data.py fewshot` writes the missing folds from ModelNet40")
    return rep


def check_scanobjectnn(root) -> Report:
    rep = _locate(root, scanobjectnn.BASE_DIR, "main_split", "scanobjectnn")
    for variant in scanobjectnn.VARIANTS:
        rep.tally(f"{variant} files", (rep.base / scanobjectnn.variant_file(variant, s) for s in ("train", "test")))
    return rep


def check_shapenetpart(root) -> Report:
    rep = _locate(root, shapenetpart.BASE_DIR, shapenetpart.CATEGORY_FILE, "shapenetpart")
    rep.tally("category file", [rep.base / shapenetpart.CATEGORY_FILE])
    for split, rel in shapenetpart.SPLIT_FILES.items():
        path = rep.base / rel
        rep.tally(f"{split} list", [path])
        if path.exists():
            entries = [str(e).split("/") for e in read_json(path)]
            rep.tally(f"{split} shapes (.txt)", (rep.base / e[-2] / f"{e[-1]}.txt" for e in entries))
    return rep


def check_meshes(root) -> Report:
    """A folder of your own meshes (the ``meshes`` data set): files per split and classes. The root is the
    mesh folder itself; ``root/train`` and ``root/test`` are used when they exist."""
    rep = Report("meshes", Path(root).absolute())
    splits = [s for s in ("train", "val", "test") if (Path(root) / s).is_dir()] or ["all"]
    for split in splits:
        files, names = mesh.find_meshes(Path(root) if split == "all" else Path(root) / split)
        rep.found[f"{split} meshes ({', '.join(mesh.MESH_EXTENSIONS)})"] = len(files)
        rep.found[f"{split} classes"] = len(set(names))
    if not any(n for k, n in rep.found.items() if "meshes" in k):
        rep.present = False
        rep.missing.append(Path(root).absolute() / f"*{{{','.join(mesh.MESH_EXTENSIONS)}}}")
    return rep


CHECKS: Dict[str, Callable[[Path], Report]] = {
    "shapenet55": check_shapenet55,
    "modelnet40": check_modelnet40,
    "modelnet40_h5": check_modelnet40_h5,
    "modelnet40_fewshot": check_fewshot,
    "scanobjectnn": check_scanobjectnn,
    "shapenetpart": check_shapenetpart,
    "meshes": check_meshes,
}
DEFAULT_CHECKS = [n for n in CHECKS if n != "meshes"]  # a data root is not a mesh folder: ask for it by name


def check_root(root, names: Optional[Iterable[str]] = None) -> List[Report]:
    """Reports for ``names`` (the peers' data sets by default); an unknown name is a ValueError."""
    names = list(names or DEFAULT_CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise UserError(f"unknown data sets {unknown}; valid: {', '.join(CHECKS)}")
    return [CHECKS[n](root) for n in names]
