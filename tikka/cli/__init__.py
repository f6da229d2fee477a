"""The `tikka` command: classify folders and buckets of photos through a served Bento, serve
the whole app, list models, and put a model into the project's store.

    tikka classify photos/ --output predictions.jsonl
    tikka classify --bulk gs://bucket/prefix --output predictions.jsonl
    tikka serve                                   (make serve: sidecar, Bento and UI)
    tikka models
    tikka import-model --bucket B --prefix P      (or --default: the embedded default model)

A client of the public HTTP API and of the BentoML model store, like the front end: it
never imports the services.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from tikka.cli.bulk import BulkFailed, classify_bulk
from tikka.cli.classify import Client, Output, Tally, classify_paths

app = typer.Typer(help=__doc__.split("\n\n")[0], no_args_is_help=True, add_completion=False)
console = Console(stderr=True)  # progress and tables; stdout carries rows when there is no --output
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_URL = "http://127.0.0.1:3000"

UrlOption = Annotated[str, typer.Option("--url", envvar="TIKKA_URL", help="The served Bento.")]
KeyOption = Annotated[
    str | None, typer.Option("--api-key", envvar="TIKKA_API_KEY", help="An API key, where the service wants one.")
]


@app.command()
def classify(
    paths: Annotated[list[Path] | None, typer.Argument(help="Image files or folders (searched recursively).")] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="A .jsonl or .csv file of rows; a re-run with the same file resumes."
            " Without it, JSON Lines on stdout.",
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Requests in flight at once.")] = 4,
    bulk: Annotated[
        str | None,
        typer.Option(
            help="Instead of PATHS: one bulk_classify task on the service, for gs://bucket/prefix or a local zip or"
            " tar; followed to the end, its rows written to --output (which it replaces)."
        ),
    ] = None,
    retries: Annotated[
        int, typer.Option(min=0, help="Tries again per file after a 429, a 503 or a lost connection.")
    ] = 6,
    explain_dir: Annotated[
        Path | None, typer.Option(help="Also save each photo's heatmap overlay (PNG) here, in the same folder layout.")
    ] = None,
) -> None:
    """Classify every image under PATHS: one row per file (file, predictions, model, or error).

    Retries 429 and 503 as Retry-After says. Files that are not images by their ending are
    skipped and counted. Exits 1 when any file failed.
    """
    if bool(paths) == bool(bulk):
        console.print("[red]error:[/red] give PATHS, or --bulk gs://bucket/prefix (or an archive), not both")
        raise typer.Exit(2)
    if bulk and output:
        output.unlink(missing_ok=True)
    rows = Output(output)
    started = time.monotonic()
    with Progress(
        TextColumn("[bold]classifying"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[red]{task.fields[failed]} failed"),
        TextColumn("{task.fields[rate]:.1f} img/s"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("classify", total=None, failed=0, rate=0.0)

        def progress(tally: Tally) -> None:
            done = tally.classified + tally.failed
            bar.update(
                task,
                total=tally.total,
                completed=done,
                failed=tally.failed,
                rate=done / max(time.monotonic() - started, 1e-6),
            )

        client = Client(url.rstrip("/"), api_key, retries)
        try:
            if bulk:
                tally = classify_bulk(bulk, client, rows, progress)
            else:
                tally = asyncio.run(classify_paths(paths, client, rows, concurrency, explain_dir, progress))
        except FileNotFoundError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        except BulkFailed as exc:
            console.print(f"[red]the bulk task failed:[/red] {exc}")
            raise typer.Exit(1) from None
        finally:
            rows.close()
    summary(tally, time.monotonic() - started, output)
    if tally.failed:
        raise typer.Exit(1)


def summary(tally: Tally, elapsed_s: float, output: Path | None) -> None:
    table = Table(title="tikka classify", show_header=False)
    done = tally.classified + tally.failed
    for name, value in (
        ("classified", tally.classified),
        ("failed", tally.failed),
        ("done by an earlier run", tally.resumed),
        ("skipped (not images)", tally.skipped),
        ("retries (429, 503, connection)", tally.retries),
        ("images per second", f"{done / elapsed_s:.1f}" if elapsed_s > 0 else "-"),
        ("rows", str(output) if output else "stdout"),
        *((f"error {code}", count) for code, count in sorted(tally.errors.items())),
    ):
        table.add_row(name, str(value))
    console.print(table)


@app.command()
def models(url: UrlOption = DEFAULT_URL, api_key: KeyOption = None) -> None:
    """The model a served Bento answers with, and the models in the local store."""
    served = Table(title=f"served by {url}")
    for column in ("model", "runtime", "chosen", "git sha"):
        served.add_column(column)
    try:
        banner = httpx.get(url.rstrip("/") + "/", headers={"X-API-Key": api_key} if api_key else {}, timeout=10)
        banner.raise_for_status()
        info = banner.json()
        runtime = info.get("runtime") or {}
        served.add_row(
            info.get("model", "?"), runtime.get("runtime", "?"), runtime.get("chosen", "?"), info.get("git_sha", "?")
        )
    except (httpx.HTTPError, ValueError) as exc:
        served.add_row(f"[red]not reachable: {exc}", "", "", "")
    console.print(served)

    use_project_store()
    import bentoml

    stored = Table(title=f"in the store {os.environ['BENTOML_HOME']}")
    for column in ("tag", "labels", "size", "created", "source"):
        stored.add_column(column)
    for model in sorted(bentoml.models.list(), key=lambda m: m.info.creation_time, reverse=True):
        metadata = model.info.metadata
        stored.add_row(
            str(model.tag),
            str(metadata.get("num_labels", "?")),
            human_bytes(model.file_size),
            model.info.creation_time.strftime("%Y-%m-%d %H:%M"),
            str(metadata.get("source", "")),
        )
    console.print(stored)


def human_bytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


@app.command("import-model")
def import_model(
    bucket: Annotated[str | None, typer.Option(envvar="TIKKA_GCS_BUCKET", help="The GCS bucket.")] = None,
    prefix: Annotated[
        str | None, typer.Option(envvar="TIKKA_GCS_PREFIX", help="The checkpoint's folder in it.")
    ] = None,
    tag: Annotated[
        str | None, typer.Option(help="The model's name in the store (the version is the content's).")
    ] = None,
    default: Annotated[bool, typer.Option("--default", help="The embedded default model instead (no bucket).")] = False,
) -> None:
    """Put a model into the project's store (.bentoml in the checkout, or BENTOML_HOME).

    From gs://BUCKET/PREFIX, each object's checksum verified (STORAGE_EMULATOR_HOST points at an
    emulator), or with --default the embedded default model. Nothing is downloaded when the store
    already has the same content.
    """
    use_project_store()
    # The scripts in models/, as make runs them: they are the import's one implementation.
    scripts = PROJECT_ROOT / "models"
    if default:
        raise typer.Exit(subprocess.run([sys.executable, str(scripts / "import_default_model.py")]).returncode)
    if not bucket or not prefix:
        console.print(
            "[red]error:[/red] give --bucket and --prefix (or TIKKA_GCS_BUCKET and TIKKA_GCS_PREFIX), or --default"
        )
        raise typer.Exit(2)
    console.print(f"importing gs://{bucket}/{prefix.strip('/')} into {os.environ['BENTOML_HOME']}")
    command = [sys.executable, str(scripts / "download_model.py"), "--bucket", bucket, "--prefix", prefix]
    raise typer.Exit(subprocess.run([*command, *(["--tag", tag] if tag else [])]).returncode)


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="The Bento's port.")] = 3000,
    sidecar_port: Annotated[int, typer.Option(help="The LLM sidecar's port.")] = 11434,
    sidecar_threads: Annotated[int, typer.Option(help="The LLM sidecar's threads.")] = 2,
    ui_port: Annotated[int, typer.Option(help="The Streamlit app's port.")] = 8501,
    start_timeout: Annotated[float, typer.Option(help="Seconds all three may take to be ready.")] = 600,
) -> None:
    """The LLM sidecar, the Bento and the Streamlit app (make serve): one line with the URLs once
    all three are ready; Ctrl-C stops all three."""
    from tikka.cli.serve import plan, run

    use_project_store()
    api = f"http://127.0.0.1:{port}"
    banner = (
        f"TikkaMasalAI is ready. API {api}  docs {api}/docs  UI http://127.0.0.1:{ui_port}"
        f"  dashboard {api}/dashboard  (Ctrl-C stops all three)"
    )
    raise typer.Exit(run(plan(PROJECT_ROOT, port, sidecar_port, sidecar_threads, ui_port), banner, start_timeout))


def use_project_store() -> None:
    """The project's own store, as make sets it, unless BENTOML_HOME says otherwise: a store
    under ~/bentoml is one no `make serve` reads."""
    os.environ.setdefault("BENTOML_HOME", str(PROJECT_ROOT / ".bentoml"))
    os.environ.setdefault("BENTOML_CONFIG", str(PROJECT_ROOT / "configuration.yaml"))
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
