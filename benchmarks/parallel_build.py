"""Build a profile with independent components trained in parallel processes (one GPU or many
CPU cores), then fit the paths' fusion on the assembled artifacts: the same artifacts as one
`genrec build`, in the time of its longest chain instead of the sum.

  python benchmarks/parallel_build.py --dataset beauty --profile full --device cuda \
      --artifacts artifacts/beauty

Steps: (1) a complete base directory with the `tiny` profile (every file present, so each
`--only` run below has something to copy); (2) one `genrec build --only ROOT` per independent
chain of the registry's `needs` graph (two_tower -> semantic_ids -> tiger, tdm; each sequential
retriever; the rankers), all at once, each into its own copy of the base; (3) the components
that need more than one chain (none today) retrained on the merged directory; (4) every
chain's files, configs and training seconds merged into one directory and `genrec build --only
fusion` run on it, which refits popularity, ItemCF and both paths' fusion plans and writes the
manifest. Per-chain wall seconds are printed; the manifest's `train_seconds` are each
component's own (slower than alone, since the chains share the device).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson

from models.artifacts.versions import resolve_artifacts
from models.build.partial import with_dependents
from models.registry import COMPONENTS, component

GENREC = [sys.executable, "-c", "from cli.main import app; app()"]


def chains() -> tuple[dict[str, set[str]], set[str]]:
    """-> ({root: the components retrained with it}, components reachable from two roots).
    Roots are the trained components that need nothing; "always" ones (popularity, ItemCF,
    fusion) are refitted by every build and belong to no chain."""
    trained = [c for c in COMPONENTS if not c.always]
    roots = [c.name for c in trained if not c.needs]
    reach = {r: {n for n in with_dependents([r]) if not component(n).always} for r in roots}
    shared = {n for r in roots for n in reach[r]
              if sum(n in reach[o] for o in roots) > 1}
    return {r: reach[r] - shared for r in roots}, shared


def run(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)


def build_cmd(args: argparse.Namespace, out: Path, profile: str, only: str | None,
              final: bool = True) -> list[str]:
    cmd = [*GENREC, "build", "--dataset", args.dataset, "--profile", profile, "--device",
           args.device, "--no-evaluate", "--artifacts", str(out)]
    for s in args.set:
        cmd += ["--set", s]
    if not final:  # a chain's own fusion fit is thrown away: make it cheap
        cmd += ["--set", "fusion.users=100"]
    else:  # the merged directory's only version worth keeping is the one this publishes
        cmd += ["--keep", "1"]
    return cmd + (["--only", only] if only else [])


def merge(into: Path, parts: dict[str, Path], names: dict[str, set[str]]) -> None:
    """Copy each chain's components (files, config, training seconds) into the current
    version of ``into`` (its file checksums are stale until the final build publishes a new
    version from it)."""
    into = resolve_artifacts(into)
    man = orjson.loads((into / "manifest.json").read_bytes())
    for root, src in parts.items():
        src = resolve_artifacts(src)
        part = orjson.loads((src / "manifest.json").read_bytes())
        for name in names[root]:
            comp = component(name)
            for f in comp.files:
                shutil.copy2(src / f, into / f)
            man["configs"][comp.key] = part["configs"][comp.key]
            man["train_seconds"][comp.key] = part["train_seconds"][comp.key]
    (into / "manifest.json").write_bytes(orjson.dumps(man, option=orjson.OPT_INDENT_2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--profile", default="full")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--artifacts", type=Path, required=True)
    ap.add_argument("--set", action="append", default=[], help="GROUP.FIELD=VALUE")
    args = ap.parse_args()
    out: Path = args.artifacts
    work = out.with_name(out.name + ".parallel")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # Content vectors are cached beside an artifacts directory (models/build/content.py).
    if (out.parent / ".cache").is_dir():
        shutil.copytree(out.parent / ".cache", work / ".cache")
    t0 = time.perf_counter()
    base = work / "base"
    if run(build_cmd(args, base, "tiny", None, final=False), work / "base.log").wait():
        sys.exit(f"base build failed: see {work / 'base.log'}")
    print(f"base ({args.dataset}, tiny) {time.perf_counter() - t0:.0f}s", flush=True)
    groups, shared = chains()
    procs: dict[str, tuple[subprocess.Popen, float]] = {}
    for root in groups:
        shutil.copytree(base, work / root, symlinks=True)  # keep the `current` link
        procs[root] = (run(build_cmd(args, work / root, args.profile, root, final=False),
                           work / f"{root}.log"), time.perf_counter())
    for root, (p, t) in procs.items():
        if p.wait():
            sys.exit(f"{root} failed: see {work / (root + '.log')}")
        print(f"{root}: {sorted(groups[root])} {time.perf_counter() - t:.0f}s", flush=True)
    merged = work / "merged"
    shutil.copytree(base, merged, symlinks=True)
    merge(merged, {r: work / r for r in groups}, groups)
    # What needs two chains trains last, on the merged directory; then the fusion fit.
    last = ",".join(sorted(shared)) or "fusion"
    t = time.perf_counter()
    if run(build_cmd(args, merged, args.profile, last), work / "last.log").wait():
        sys.exit(f"--only {last} failed: see {work / 'last.log'}")
    print(f"--only {last} (+ fusion) {time.perf_counter() - t:.0f}s", flush=True)
    final = resolve_artifacts(merged)  # the version the last build published
    man = orjson.loads((final / "manifest.json").read_bytes())
    man["retrained"] = None  # every component was trained with this profile
    man["parallel_build"] = {"chains": {r: sorted(g) for r, g in groups.items()},
                             "last": sorted(shared)}
    (final / "manifest.json").write_bytes(orjson.dumps(man, option=orjson.OPT_INDENT_2))
    shutil.rmtree(out, ignore_errors=True)
    merged.rename(out)
    shutil.rmtree(work)
    print(f"artifacts written to {out} in {time.perf_counter() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
