"""Versioned artifacts: each build is published as ``<root>/versions/<version>/`` and the
``<root>/current`` symlink (relative, flipped atomically) names the version readers load.

A version is assembled under a temporary name (``staging_dir``), listed file by file with
sizes and checksums in its manifest (``file_table``), then ``publish``-ed: renamed into
``versions/``, made current, and the versions beyond the newest ``keep`` are pruned (never the
current one). A failed build is ``discard``-ed and never becomes current. ``set_current``
points ``current`` back at an already published version (a rollback) with the same flip.

Every reader finds the version to load through ``resolve_artifacts``: a directory holding
``manifest.json`` is a version itself (the layout before versions, or an explicit version
path), otherwise its ``current`` link is followed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

MANIFEST = "manifest.json"  # written last: its presence means a version is whole
VERSIONS = "versions"
CURRENT = "current"
DEFAULT_KEEP = 3


def resolve_artifacts(path: Path) -> Path:
    """The version directory that ``path`` names: ``path`` itself when it holds a manifest,
    else the target of ``path/current``. Raises FileNotFoundError naming ``path`` when it is
    neither (no artifacts there)."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    link = path / CURRENT
    if link.exists():
        # Resolved once, so a reader keeps one version even if ``current`` flips meanwhile.
        return link.resolve()
    raise FileNotFoundError(f"no artifacts in {path} (neither {MANIFEST} nor a {CURRENT} "
                            "version there)")


def staging_dir(root: Path) -> Path:
    """Where a build into ``root`` assembles its version: a sibling of ``root``, so a crashed
    build leaves nothing inside it and the final rename stays on one file system."""
    root = Path(root)
    return root.with_name(root.name + ".partial")


def discard(staging: Path) -> None:
    """Remove a failed build's staging directory."""
    shutil.rmtree(staging, ignore_errors=True)


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_table(directory: Path) -> dict[str, dict[str, Any]]:
    """``{relative name: {"size": bytes, "sha256": hex}}`` for every file of a version except
    its manifest (which holds the table and takes `genrec eval`'s metrics later)."""
    directory = Path(directory)
    table: dict[str, dict[str, Any]] = {}
    for p in sorted(directory.rglob("*")):
        name = p.relative_to(directory).as_posix()
        if p.is_file() and name != MANIFEST:
            table[name] = {"size": p.stat().st_size, "sha256": _sha256(p)}
    return table


def verify(version_dir: Path) -> list[str]:
    """The problems of a version against its manifest's ``files``: unreadable manifest, a
    listed file missing, or its size or checksum differing. Files the manifest does not list
    are fine. An empty list means the version is intact."""
    version_dir = Path(version_dir)
    try:
        manifest = orjson.loads((version_dir / MANIFEST).read_bytes())
        files = manifest["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not an object")
    except FileNotFoundError:
        return [f"{MANIFEST}: missing"]
    except (ValueError, TypeError, KeyError) as exc:
        return [f"{MANIFEST}: no file list ({type(exc).__name__}: {exc})"]
    problems = []
    for name, entry in files.items():
        path = version_dir / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            problems.append(f"{name}: not a name inside the version")
        elif not isinstance(entry, dict):
            problems.append(f"{name}: malformed entry in {MANIFEST}")
        elif not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != entry.get("size"):
            problems.append(f"{name}: size {path.stat().st_size}, manifest says "
                            f"{entry.get('size')}")
        elif _sha256(path) != entry.get("sha256"):
            problems.append(f"{name}: sha256 differs from the manifest")
    return problems


def unique_version(root: Path, version: str) -> str:
    """``version`` (path separators replaced), suffixed ``-2``, ``-3``, ... while
    ``root/versions`` already holds that name."""
    base = version.replace("/", "_").replace(os.sep, "_").lstrip(".") or "version"
    name, n = base, 1
    while (Path(root) / VERSIONS / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def created_at(version_dir: Path) -> datetime:
    """A version's creation time: its manifest's ``created_at``, else the directory's mtime."""
    try:
        created = datetime.fromisoformat(
            orjson.loads((version_dir / MANIFEST).read_bytes())["created_at"])
        return created if created.tzinfo else created.replace(tzinfo=UTC)
    except (OSError, ValueError, TypeError, KeyError):
        return datetime.fromtimestamp(version_dir.stat().st_mtime, UTC)


def list_versions(root: Path) -> list[Path]:
    """The published versions under ``root/versions``, newest first (by ``created_at``, then
    name). Hidden entries (a prune in progress) are not versions."""
    folder = Path(root) / VERSIONS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(found, key=lambda p: (created_at(p), p.name), reverse=True)


def current_version(root: Path) -> Path | None:
    """The version ``root/current`` points to, or None."""
    link = Path(root) / CURRENT
    return link.resolve() if link.exists() else None


def point_current(root: Path, version_dir: Path) -> None:
    """Make ``root/current`` point to ``version_dir`` (a relative link) in one step: a temp
    link renamed over the old one, so readers see the old version or the new, never none."""
    root = Path(root)
    tmp = root / f".{CURRENT}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(version_dir, root), tmp)
    os.replace(tmp, root / CURRENT)


def version_path(root: Path, name: str) -> Path:
    """The published version called ``name`` under ``root/versions``. Raises ValueError for a
    name that is not a plain directory name (no separators, no ``..``: it comes from a request)
    and FileNotFoundError, listing what there is, when no such version is published."""
    if not name or name in (".", "..") or "/" in name or os.sep in name or name.startswith("."):
        raise ValueError(f"{name!r} is not a version name")
    path = Path(root) / VERSIONS / name
    if not (path / MANIFEST).is_file():
        have = ", ".join(p.name for p in list_versions(root)) or "none"
        raise FileNotFoundError(f"no version {name!r} in {Path(root) / VERSIONS} (have: {have})")
    return path


def set_current(root: Path, name: str) -> Path:
    """Point ``root/current`` at the already published version ``name`` (a rollback), with the
    same atomic flip ``publish`` uses; -> its directory. Nothing is pruned or copied."""
    path = version_path(root, name)
    point_current(root, path)
    return path


def _retire_legacy(root: Path) -> None:
    """A ``root`` still in the layout before versions (its files, manifest included, directly
    in it) would shadow ``current``: move its files into a version of their own. The manifest
    moves first, so readers switch from the old files to ``current`` in one step."""
    manifest = root / MANIFEST
    if not manifest.is_file():
        return
    try:
        old = orjson.loads(manifest.read_bytes()).get("version") or "legacy"
    except (ValueError, AttributeError):
        old = "legacy"
    dest = root / VERSIONS / unique_version(root, f"{old}")
    dest.mkdir()
    os.rename(manifest, dest / MANIFEST)
    for p in root.iterdir():
        if p.is_file() and not p.is_symlink() and not p.name.startswith("."):
            os.rename(p, dest / p.name)


def prune(root: Path, keep: int = DEFAULT_KEEP) -> list[Path]:
    """Delete the versions beyond the newest ``keep`` (never the current one); -> what was
    deleted. Each is renamed to a hidden name first, so a half-deleted version is never
    listed."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    current = current_version(root)
    removed = []
    for p in list_versions(root)[keep:]:
        if current is not None and p.resolve() == current:
            continue
        trash = p.with_name(f".deleting-{p.name}")
        os.rename(p, trash)
        shutil.rmtree(trash, ignore_errors=True)
        removed.append(p)
    return removed


def publish(root: Path, staging: Path, version: str, keep: int = DEFAULT_KEEP) -> Path:
    """Move a complete ``staging`` directory to ``root/versions/<version>``, make it current,
    then prune to the newest ``keep``; -> the version directory. If it cannot become current,
    it is removed and the previous version stays current."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    root = Path(root)
    final = root / VERSIONS / version
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        raise FileExistsError(f"{final} already exists")
    os.rename(staging, final)
    try:
        point_current(root, final)
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
    _retire_legacy(root)
    try:
        prune(root, keep)
    except OSError as exc:  # the new version is current; a stale old one is no failure
        warnings.warn(f"pruning old versions in {root} failed: {exc}", stacklevel=2)
    return final
