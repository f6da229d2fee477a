"""Putting checkpoints into the BentoML model store: from a GCS bucket or a directory.

The service only ever reads the store; scripts in ``models/`` write to it. A
checkpoint is a transformers image-classification directory (``config.json`` +
weights) that ``AutoModelForImageClassification`` can load.

Imports are atomic: files are downloaded and verified in a temporary directory,
and ``bentoml.models.create`` only moves a model into the store when its block
exits cleanly. Each import also exports the ONNX graph that is served
(tikka/tools/export.py) into the same model. Store versions are derived from the content (object generations
and checksums, or file hashes), so an unchanged source maps to a version that
is already there and nothing is downloaded.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import NotFound

from tikka.model.checkpoint import labels_of
from tikka.tools.export import EXPORT_VERSION, export_onnx
from tikka.tools.quantize import gate_reduced_precisions

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


class ArtifactError(Exception):
    """An import failure with a message that says what to fix; ``exit_code`` for the CLI."""

    exit_code = 1


class CredentialsError(ArtifactError):
    exit_code = 2


class AccessDenied(ArtifactError):
    exit_code = 3


class SourceNotFound(ArtifactError):
    exit_code = 4


class CheckpointError(ArtifactError):
    """The files are not a loadable image-classification checkpoint."""

    exit_code = 5


class ChecksumMismatch(ArtifactError):
    exit_code = 6


class StorageUnreachable(ArtifactError):
    exit_code = 7


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def validate_checkpoint_dir(directory: Path) -> dict[str, Any]:
    """Check the files a checkpoint needs before anything touches the store; return its config."""
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{directory} has no config.json: it is not a transformers checkpoint")
    if not any((directory / name).is_file() for name in WEIGHT_FILES):
        raise CheckpointError(f"{directory} has no weights: expected one of {', '.join(WEIGHT_FILES)}")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_path} is not valid JSON: {exc}") from exc
    labels = config.get("id2label") or {}
    if not labels and not config.get("label_names"):
        raise CheckpointError(f"{config_path} has no id2label: the service needs the class names")
    return config


def find_model(tag: str) -> bentoml.Model | None:
    try:
        return bentoml.models.get(tag)
    except NotFound:
        return None


def import_checkpoint(
    tag: str,
    write_checkpoint: Callable[[Path], None],
    metadata: dict[str, Any],
) -> bentoml.Model:
    """Create model ``tag`` from the files ``write_checkpoint`` puts into the given directory.

    ``bentoml.models.create`` builds the model in a temporary directory and only
    moves it into the store when the block exits cleanly, so a failure here
    never leaves a half-written model, and never touches an existing version.
    """
    with bentoml.models.create(
        tag,
        module="transformers",
        labels={"task": "image-classification"},
        metadata=metadata,
    ) as model:
        target = Path(model.path)
        write_checkpoint(target)
        config = validate_checkpoint_dir(target)
        labels = labels_of(config)
        onnx_graph = export_onnx(target)
        gate = gate_reduced_precisions(target) if onnx_graph else {}
        model.info.metadata.update(
            {
                "labels": labels,
                "num_labels": len(labels),
                # The served graph (tikka/tools/export.py), or None: served with torch.
                "onnx_graph": onnx_graph.name if onnx_graph else None,
                # The reduced precisions that passed their agreement gate (tikka/tools/quantize.py).
                "precisions_passed": [name for name in ("int8", "bf16") if gate.get(name, {}).get("passed")],
                "onnx_export_version": EXPORT_VERSION,
                "architecture": (config.get("architectures") or [config.get("architecture", "unknown")])[0],
                "files_sha256": {p.name: sha256_file(p) for p in sorted(target.iterdir()) if p.is_file()},
            }
        )
    return bentoml.models.get(model.tag)


def copy_checkpoint_dir(source: Path) -> Callable[[Path], None]:
    def write(target: Path) -> None:
        for item in source.iterdir():
            if item.is_file():
                shutil.copy2(item, target / item.name)

    return write


def content_version(manifest: Any) -> str:
    """A store version from the source's content and the export recipe (a new recipe, a new version)."""
    versioned = {"source": manifest, "onnx_export": EXPORT_VERSION}
    return hashlib.sha256(json.dumps(versioned, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ImportResult:
    model: bentoml.Model
    imported: bool  # False: the same content was already in the store
    downloaded_bytes: int = 0


def import_from_dir(directory: Path, name: str) -> ImportResult:
    """Import a local checkpoint directory (no bucket needed)."""
    directory = directory.resolve()
    if not directory.is_dir():
        raise SourceNotFound(f"{directory} is not a directory")
    validate_checkpoint_dir(directory)
    files = {p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.is_file()}
    tag = f"{name}:{content_version(files)}"
    if existing := find_model(tag):
        return ImportResult(existing, imported=False)
    metadata = {"source": f"dir:{directory}", "source_files_sha256": files}
    return ImportResult(import_checkpoint(tag, copy_checkpoint_dir(directory), metadata), True)


# --- Google Cloud Storage -------------------------------------------------


@dataclass(frozen=True)
class RemoteObject:
    path: str  # relative to the prefix
    blob_name: str
    size: int
    generation: int
    crc32c: str | None
    md5_hash: str | None


def storage_client(project: str | None = None):
    """The official client: ADC or GOOGLE_APPLICATION_CREDENTIALS, GOOGLE_CLOUD_PROJECT,
    and STORAGE_EMULATOR_HOST, all resolved by the library itself."""
    import google.auth.exceptions
    from google.cloud import storage

    try:
        return storage.Client(project=project)
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise CredentialsError(
            f"no usable Google Cloud credentials ({first_line(exc)}). Run"
            " `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS"
            " to a service-account key file with read access to the bucket"
        ) from None


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def list_checkpoint(client, bucket: str, prefix: str, timeout: float) -> list[RemoteObject]:
    prefix = prefix.strip("/")
    listing_prefix = f"{prefix}/" if prefix else ""
    where = f"gs://{bucket}/{listing_prefix}"
    with storage_errors(where, f"bucket {bucket!r} does not exist ({where}): check --bucket"):
        blobs = list(client.list_blobs(bucket, prefix=listing_prefix, timeout=timeout, retry=retry_within(timeout)))
    objects = [
        RemoteObject(
            path=blob.name[len(listing_prefix) :],
            blob_name=blob.name,
            size=int(blob.size or 0),
            generation=int(blob.generation),
            crc32c=blob.crc32c,
            md5_hash=blob.md5_hash,
        )
        for blob in blobs
        if not blob.name.endswith("/")  # "folder" placeholder objects
    ]
    if not objects:
        raise SourceNotFound(
            f"no objects under gs://{bucket}/{listing_prefix}: check --prefix"
            " (the folder that holds config.json and the weights)"
        )
    nested = sorted(o.path for o in objects if "/" in o.path)
    if nested:
        raise CheckpointError(
            f"gs://{bucket}/{listing_prefix} has sub-folders ({nested[0]}, ...): point --prefix"
            " at the folder that holds config.json directly"
        )
    names = {o.path for o in objects}
    if "config.json" not in names:
        raise CheckpointError(f"gs://{bucket}/{listing_prefix} has no config.json: not a checkpoint")
    if not names & set(WEIGHT_FILES):
        raise CheckpointError(
            f"gs://{bucket}/{listing_prefix} has no weights: expected one of {', '.join(WEIGHT_FILES)}"
        )
    return objects


def retry_within(timeout: float):
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_timeout(timeout)


@contextlib.contextmanager
def storage_errors(where: str, missing: str):
    """Turns the client's exceptions into ArtifactErrors that say what to fix.

    ``missing`` is the message for a 404 at this step (a bucket when listing,
    an object that vanished when downloading).
    """
    import google.auth.exceptions
    import requests
    from google.api_core import exceptions as api

    try:
        yield
    except ArtifactError:
        raise
    except api.NotFound:
        raise SourceNotFound(missing) from None
    except (api.Unauthorized, api.Forbidden) as exc:
        raise AccessDenied(
            f"the credentials were refused for {where} ({exc.code}): grant the account"
            " roles/storage.objectViewer on the bucket, or use other credentials"
        ) from None
    except google.auth.exceptions.GoogleAuthError as exc:
        raise CredentialsError(
            f"could not authenticate to Google Cloud ({first_line(exc)}): check"
            " GOOGLE_APPLICATION_CREDENTIALS or run `gcloud auth application-default login`"
        ) from None
    except (requests.exceptions.RequestException, api.RetryError, ConnectionError, TimeoutError) as exc:
        raise StorageUnreachable(
            f"cannot reach Cloud Storage{endpoint_hint()} for {where} ({first_line(exc)}):"
            " check the network, or STORAGE_EMULATOR_HOST if you use an emulator"
        ) from None
    except api.GoogleAPICallError as exc:
        raise ArtifactError(f"Cloud Storage refused the request for {where}: {first_line(exc)}") from None


def endpoint_hint() -> str:
    import os

    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    return f" at {emulator} (STORAGE_EMULATOR_HOST)" if emulator else ""


class VerifyingWriter:
    """A file-like sink that hashes (CRC32C, MD5) and reports progress as bytes arrive."""

    def __init__(self, fh, progress):
        import google_crc32c

        self.fh, self.progress = fh, progress
        self.crc32c = google_crc32c.Checksum()
        self.md5 = hashlib.md5()

    def write(self, data: bytes) -> int:
        self.fh.write(data)
        self.crc32c.update(data)
        self.md5.update(data)
        self.progress.update(len(data))
        return len(data)

    def verify(self, obj: RemoteObject, bucket: str) -> str:
        """The check that passed (``CRC32C <value>``), or ``ChecksumMismatch``."""
        if obj.crc32c:
            expected, actual, kind = obj.crc32c, base64.b64encode(self.crc32c.digest()).decode(), "CRC32C"
        elif obj.md5_hash:
            expected, actual, kind = obj.md5_hash, base64.b64encode(self.md5.digest()).decode(), "MD5"
        else:
            raise ChecksumMismatch(f"gs://{bucket}/{obj.blob_name} has neither CRC32C nor MD5 metadata")
        if expected != actual:
            raise ChecksumMismatch(
                f"{kind} mismatch for gs://{bucket}/{obj.blob_name} (bucket says {expected},"
                f" downloaded bytes give {actual}): the object is corrupt or changed during the"
                " download; re-upload it or run again. The store was not changed"
            )
        return f"{kind} {actual}"


def download_checkpoint(client, bucket: str, objects: list[RemoteObject], target: Path, timeout: float) -> int:
    from tqdm import tqdm

    total = sum(o.size for o in objects)
    bucket_ref = client.bucket(bucket)
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="download") as progress:
        for obj in objects:
            progress.set_postfix_str(obj.path)
            blob = bucket_ref.blob(obj.blob_name, generation=obj.generation)
            where = f"gs://{bucket}/{obj.blob_name}"
            vanished = f"{where} was deleted or replaced during the sync: run again"
            with (target / obj.path).open("wb") as fh, storage_errors(where, vanished):
                writer = VerifyingWriter(fh, progress)
                # checksum=None: we verify against the listing's metadata ourselves,
                # the same way for every object, emulator or not.
                blob.download_to_file(writer, checksum=None, timeout=timeout, retry=retry_within(timeout))
            check = writer.verify(obj, bucket)
            progress.write(f"verified {where}: {obj.size} bytes, {check}", file=sys.stderr)
    return total


def import_from_gcs(
    bucket: str, prefix: str, name: str, *, project: str | None = None, timeout: float = 60.0
) -> ImportResult:
    client = storage_client(project)
    objects = list_checkpoint(client, bucket, prefix, timeout)
    manifest = {o.path: {k: v for k, v in asdict(o).items() if k != "path"} for o in objects}
    tag = f"{name}:{content_version(manifest)}"
    if existing := find_model(tag):  # the version is a hash of this very manifest
        return ImportResult(existing, imported=False)

    with tempfile.TemporaryDirectory(prefix="tikka-download-") as tmp:
        downloaded = download_checkpoint(client, bucket, objects, Path(tmp), timeout)
        validate_checkpoint_dir(Path(tmp))
        metadata = {
            "source": f"gs://{bucket}/{prefix.strip('/')}",
            "bucket": bucket,
            "prefix": prefix.strip("/"),
            "objects": manifest,
        }
        model = import_checkpoint(tag, copy_checkpoint_dir(Path(tmp)), metadata)
    return ImportResult(model, imported=True, downloaded_bytes=downloaded)
