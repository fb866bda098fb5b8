"""The `genrec` command: build, eval, serve. It sits above every layer (it may import the web
layer to serve); component and method names in its help come from ``models.registry``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loadtest.main import loadtest
from models.artifacts.versions import DEFAULT_KEEP
from models.registry import COMPONENTS, PATHS, RECALL, names
from service.config import REPO_ROOT

if TYPE_CHECKING:
    from service.config import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="genrec: train, evaluate and serve recommendation models.")
console = Console()
# Two trainers side by side, one thread each, beat one trainer on two threads on a small CPU
# (models/build/parallel.py); more would share the same cores.
BUILD_WORKERS = min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                    else os.cpu_count() or 1)

DatasetOpt = Annotated[str, typer.Option(help="bundled name (ml-100k, beauty) or a path")]
ArtifactsOpt = Annotated[
    Path | None, typer.Option(help="artifacts directory (its current version is used) or one "
                                   "version's directory [default: artifacts/<dataset name>]")
]


def _default_artifacts(dataset: str) -> Path:
    name = Path(dataset.rstrip("/")).stem if ("/" in dataset or "." in dataset) else dataset
    return REPO_ROOT / "artifacts" / name


def _fail(exc: Exception) -> NoReturn:
    # The message quotes file contents and paths: escape it, or a token such as "[/x]" is read
    # as Rich markup and the error report itself dies with a MarkupError traceback. No wrapping,
    # so a long path stays one copyable string.
    console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
    raise typer.Exit(2) from None


@app.command()
def build(
    dataset: DatasetOpt = "ml-100k",
    artifacts: ArtifactsOpt = None,
    profile: Annotated[str, typer.Option(
        help="default, tiny (tests) or full (every training sample; meant for a GPU)")
    ] = "default",
    seed: int = 0,
    evaluate: Annotated[bool, typer.Option(help="run `genrec eval` afterwards")] = True,
    device: Annotated[str, typer.Option(
        help="torch device for the generative models' training, e.g. cuda")] = "cpu",
    only: Annotated[str, typer.Option(
        help="retrain only these comma-separated components in existing artifacts, e.g. "
             f"tiger,sasrec ({', '.join(c.name for c in COMPONENTS if not c.always)})")] = "",
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="override a profile setting, GROUP.FIELD=VALUE (JSON values), e.g. "
                      "sasrec_train.epochs=20; repeatable")] = None,
    keep: Annotated[int, typer.Option(
        min=1, help="versions to keep in the artifacts directory (the newest; the current "
                    "one is never deleted)")] = DEFAULT_KEEP,
    progressive: Annotated[bool, typer.Option(
        help="also publish a partial version whenever a new recall source is trained, for a "
             "service that hot-loads them (what `genrec serve` runs on first start)")] = False,
    workers: Annotated[int, typer.Option(
        min=1, help="components trained at once, each in its own process on its share of the "
                    "cores [default: 2 where there are 2 cores or more]")] = BUILD_WORKERS,
) -> None:
    """Train the cascade models on DATASET and publish them as a new version of an artifacts
    directory (versions/<version>/, then the `current` link)."""
    from models.build.main import build as run_build
    from models.data import DataFormatError

    # `genrec serve` stops its background build with SIGTERM: exit through the build's cleanup
    # (its workers stopped, its staging directory removed) rather than die on the spot.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    out = artifacts or _default_artifacts(dataset)
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        _fail(ValueError(f"--device: {exc}"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        _fail(ValueError("--device cuda: no CUDA device is available on this machine"))
    try:
        chosen = [c.strip() for c in only.split(",") if c.strip()] or None
        run_build(dataset, out, profile=profile, seed=seed, console=console, device=device,
                  only=chosen, overrides=set_ or [], keep=keep, progressive=progressive,
                  workers=workers)
    except (DataFormatError, ValueError) as exc:
        _fail(exc)
    if evaluate:
        eval_(dataset=dataset, artifacts=out)


@app.command("eval")
def eval_(
    dataset: Annotated[str | None, typer.Option(
        help="dataset to evaluate on [default: the one the artifacts were built from]")] = None,
    artifacts: ArtifactsOpt = None,
    stage: Annotated[str, typer.Option(help="test or valid")] = "test",
    models: Annotated[str, typer.Option(
        "--models", "--methods",
        help=f"comma-separated, from: {','.join((*names(RECALL), *PATHS))} "
             "[default: every one the artifacts serve]")
    ] = "",
    workers: Annotated[int, typer.Option(
        min=1, help="processes for the per-user methods (forked, one thread each); the "
                    "figures do not depend on it")] = 1,
) -> None:
    """Full-ranking HR/NDCG at 5, 10 and 50 per recall source and for both paths."""
    import faiss
    import torch

    from models.artifacts.manifest import read_manifest, update_metrics
    from models.artifacts.versions import resolve_artifacts
    from models.data import DataFormatError, leave_one_out, load_dataset
    from models.engine.core.runtime import Runtime
    from models.evaluate.offline import evaluate
    from service.config import Settings

    out = artifacts or _default_artifacts(dataset or "ml-100k")
    if stage not in ("test", "valid"):  # checked first: it needs no I/O
        _fail(ValueError("--stage must be test or valid"))
    try:
        settings = Settings()  # the GENREC_* values the service runs with
    except ValueError as exc:
        _fail(exc)
    try:
        out = resolve_artifacts(out)  # a root's current version, read and updated below
    except FileNotFoundError as exc:
        _fail(exc)
    manifest_path = out / "manifest.json"
    try:
        manifest = read_manifest(out)
        source, fingerprint = manifest["dataset"]["source"], manifest["dataset"]["fingerprint"]
    except FileNotFoundError as exc:
        _fail(exc)
    except KeyError as exc:
        _fail(ValueError(f"{manifest_path}: malformed manifest, missing key {exc}"))
    except (ValueError, TypeError) as exc:
        # orjson's JSONDecodeError (a ValueError) gives the line and column but not the file.
        _fail(ValueError(f"{manifest_path}: malformed manifest: {exc}"))
    try:
        ds = load_dataset(dataset or source)
    except DataFormatError as exc:
        _fail(exc)
    if ds.fingerprint != fingerprint:
        _fail(ValueError(f"{out} was built from other data than {ds.name}; rebuild it"))
    try:
        rt = Runtime.load(out)
    except Exception as exc:  # a missing or corrupt weight/index file, whatever the library
        _fail(ValueError(f"{out}: cannot load the artifacts ({type(exc).__name__}: {exc}); "
                         "rebuild them with `genrec build`"))
    try:
        # One intra-op thread, as served (service/loader.py): torch's default thread pool on
        # per-user batches this small is slower, pathologically so on a busy machine; the
        # same holds for faiss's OpenMP team on one-query searches (5-10x on a busy 2-core
        # box). Results do not depend on either.
        torch.set_num_threads(settings.torch_threads)
        faiss.omp_set_num_threads(settings.torch_threads)
        chosen = [m.strip() for m in models.split(",") if m.strip()] or None
        results = evaluate(rt, leave_one_out(ds), chosen, stage=stage, settings=settings,
                           timestamps=ds.timestamps, workers=workers)
    except ValueError as exc:
        _fail(exc)
    update_metrics(out, stage, results)
    first = next(iter(results.values()))
    table = Table(title=f"{ds.name}, {stage} split, full ranking ({int(first['users'])} users)")
    cols = [c for c in first if c != "users"]
    table.add_column("method")
    for c in cols:
        table.add_column(c, justify="right")
    for m, row in results.items():
        table.add_row(m, *(f"{row[c]:.4f}" for c in cols))
    console.print(table)


@app.command()
def serve(
    dataset: DatasetOpt = "ml-100k",
    artifacts: ArtifactsOpt = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    build_missing: Annotated[bool, typer.Option(
        "--build/--no-build", help="train missing artifacts in a background process while "
                                   "serving what is ready")] = True,
    workers: Annotated[int, typer.Option(
        min=1, help="worker processes (each with its own compute thread); more than one "
                    "needs GENREC_REDIS_URL (the store and the experiment must be shared)")
    ] = 1,
) -> None:
    """Serve the API (embedded store unless GENREC_REDIS_URL is set). Without complete
    artifacts, a `genrec build --progressive` runs in its own process: the service answers as
    soon as its first version (popularity, ItemCF) is published, seconds in, and hot-loads
    each later one."""
    import uvicorn

    from models.artifacts.manifest import artifacts_complete
    from service.app import create_app
    from service.config import Settings

    try:
        # Validated before any build, so a bad --port or GENREC_* variable fails in seconds.
        settings = Settings(dataset=dataset, host=host, port=port)
        # --artifacts, else GENREC_ARTIFACTS_DIR, else artifacts/<dataset>.
        out = artifacts or (settings.artifacts_dir if "artifacts_dir" in
                            settings.model_fields_set else _default_artifacts(dataset))
        settings = settings.model_copy(update={"artifacts_dir": out})
    except ValueError as exc:  # pydantic's ValidationError names the field
        _fail(exc)
    if workers > 1 and settings.redis_url is None:
        _fail(ValueError("--workers > 1 needs GENREC_REDIS_URL: each worker would otherwise "
                         "keep its own embedded store and experiment counts"))
    trainer = None
    if not artifacts_complete(out):
        if not build_missing:
            _fail(FileNotFoundError(f"no artifacts in {out}; run `genrec build` first"))
        trainer = _start_progressive_build(dataset, out)
        _stop_on_signal(trainer)
    try:
        if workers > 1:
            _run_workers(settings, workers)
        else:
            uvicorn.run(create_app(settings), host=host, port=port,
                        log_level=settings.log_level)
    finally:
        if trainer is not None and trainer.poll() is None:
            trainer.terminate()  # a stopped service stops its build too


def _run_workers(settings: Settings, workers: int) -> None:
    """uvicorn with ``workers`` processes: each builds the app from the environment (the
    settings resolved here are exported as GENREC_* first), and prometheus-client's
    multiprocess mode merges their metrics (a fresh PROMETHEUS_MULTIPROC_DIR, or the one
    given, emptied: files of an earlier run would be summed in)."""
    import os
    import tempfile

    import uvicorn

    from service.metrics import MULTIPROC_ENV

    given = os.environ.get(MULTIPROC_ENV)
    if given:
        for f in Path(given).glob("*.db"):
            f.unlink()
    else:
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="genrec-metrics-")
    os.environ.update({"GENREC_ARTIFACTS_DIR": str(settings.artifacts_dir),
                       "GENREC_DATASET": settings.dataset})
    uvicorn.run("service.app:create_app", factory=True, workers=workers, host=settings.host,
                port=settings.port, log_level=settings.log_level)


def _stop_on_signal(trainer: subprocess.Popen[bytes]) -> None:
    """SIGTERM / SIGINT stop the background build too. uvicorn restores the handlers it
    found and raises the signal again once it has shut down, so these run then (a plain
    ``finally`` would not: the default handler ends the process first)."""
    def handler(signum: int, _frame: object) -> None:
        if trainer.poll() is None:
            trainer.terminate()
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def _start_progressive_build(dataset: str, out: Path) -> subprocess.Popen[bytes]:
    """`genrec build --progressive` in its own process (training never runs in the serving
    one: its libraries and memory stay out of the replica), its progress on this terminal;
    returns once the first version is published."""
    import time

    from models.artifacts.versions import resolve_artifacts

    console.print(f"no complete artifacts in {out}: training them from {dataset} in the "
                  "background; serving each model as it is ready")
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "build", "--dataset", dataset,
                             "--artifacts", str(out), "--progressive"])
    while True:
        try:
            resolve_artifacts(out)
            return proc
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            _fail(RuntimeError(f"the build of {out} failed (exit status {proc.returncode})"))
        time.sleep(0.5)


app.command("loadtest")(loadtest)


if __name__ == "__main__":
    app()
