"""The `genrec` command: build, eval, serve."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from service.config import REPO_ROOT

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="genrec: train, evaluate and serve recommendation models.")
console = Console()

DatasetOpt = Annotated[str, typer.Option(help="bundled name (ml-100k, beauty) or a path")]
ArtifactsOpt = Annotated[
    Path | None, typer.Option(help="artifacts directory [default: artifacts/<dataset name>]")
]


def _default_artifacts(dataset: str) -> Path:
    name = Path(dataset.rstrip("/")).stem if ("/" in dataset or "." in dataset) else dataset
    return REPO_ROOT / "artifacts" / name


def _fail(exc: Exception) -> None:
    console.print(f"[red]error:[/] {exc}")
    raise typer.Exit(2) from None


@app.command()
def build(
    dataset: DatasetOpt = "ml-100k",
    artifacts: ArtifactsOpt = None,
    profile: Annotated[str, typer.Option(help="model sizes: default or tiny")] = "default",
    seed: int = 0,
    evaluate: Annotated[bool, typer.Option(help="run `genrec eval` afterwards")] = True,
) -> None:
    """Train the cascade models on DATASET and export them to an artifacts directory."""
    from models.build import build as run_build
    from models.data import DataFormatError

    out = artifacts or _default_artifacts(dataset)
    try:
        run_build(dataset, out, profile=profile, seed=seed, console=console)
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
    methods: Annotated[str, typer.Option(
        help="comma-separated: popular,itemcf,ann,cascade")] = "popular,itemcf,ann,cascade",
) -> None:
    """Full-ranking HR@10/NDCG@10/HR@50/NDCG@50 per recall source and for the cascade."""
    from models.build import update_metrics
    from models.data import DataFormatError, leave_one_out, load_dataset
    from models.evaluate import evaluate
    from service.runtime import Runtime, read_manifest

    out = artifacts or _default_artifacts(dataset or "ml-100k")
    try:
        manifest = read_manifest(out)
        ds = load_dataset(dataset or manifest["dataset"]["source"])
    except (DataFormatError, FileNotFoundError) as exc:
        _fail(exc)
    if ds.fingerprint != manifest["dataset"]["fingerprint"]:
        _fail(ValueError(f"{out} was built from other data than {ds.name}; rebuild it"))
    if stage not in ("test", "valid"):
        _fail(ValueError("--stage must be test or valid"))
    rt = Runtime.load(out)
    try:
        results = evaluate(rt, leave_one_out(ds), [m.strip() for m in methods.split(",")],
                           stage=stage)
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
    build_missing: Annotated[bool, typer.Option("--build/--no-build",
                                                help="build missing artifacts first")] = True,
) -> None:
    """Serve the API (embedded store unless GENREC_REDIS_URL is set)."""
    import uvicorn

    from service.app import create_app
    from service.config import Settings
    from service.runtime import artifacts_complete

    out = artifacts or _default_artifacts(dataset)
    if not artifacts_complete(out):
        if not build_missing:
            _fail(FileNotFoundError(f"no artifacts in {out}; run `genrec build` first"))
        console.print(f"no artifacts in {out}: building them from {dataset}")
        build(dataset=dataset, artifacts=out, profile="default", seed=0, evaluate=True)
    settings = Settings(dataset=dataset, artifacts_dir=out, host=host, port=port)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=settings.log_level)


if __name__ == "__main__":
    app()
