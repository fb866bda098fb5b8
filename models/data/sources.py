"""Where datasets come from: the bundled names, and resolving a name or a path to a loader."""

from __future__ import annotations

from pathlib import Path

from models.data.dataset import DataFormatError, Dataset
from models.data.movielens import load_movielens
from models.data.sasrec import load_sasrec

# Bundled name -> path under the data directory.
BUNDLED: dict[str, str] = {
    "ml-100k": "ml-100k",
    "beauty": "amazon-beauty/Beauty.txt",
}
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "data"
_MARKERS = ("u.data", "ratings.dat", "ratings.csv")


def resolve(name_or_path: str, data_dir: Path | None = None) -> tuple[Path, str]:
    """(path, dataset name) for a bundled name or a file/directory path."""
    if name_or_path in BUNDLED:
        path = Path(data_dir or DEFAULT_DATA_DIR) / BUNDLED[name_or_path]
        if not path.exists():
            raise DataFormatError(str(path), None, f"bundled dataset {name_or_path!r} not found")
        return path, name_or_path
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise DataFormatError(
            str(path),
            None,
            f"no such file or directory, and not a bundled name ({', '.join(sorted(BUNDLED))})",
        )
    return path, (path.name if path.is_dir() else path.stem)


def load_dataset(name_or_path: str, data_dir: Path | None = None) -> Dataset:
    """Load a bundled dataset by name, a MovieLens directory (recognised by u.data,
    ratings.dat or ratings.csv) or a SASRec-format file."""
    path, name = resolve(str(name_or_path), data_dir)
    if path.is_dir():
        if not any((path / m).is_file() for m in _MARKERS):
            raise DataFormatError(
                str(path), None, f"unknown dataset directory: expected one of {', '.join(_MARKERS)}"
            )
        return load_movielens(path, name)
    return load_sasrec(path, name)
