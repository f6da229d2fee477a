"""models/download_model.py against a real GCS emulator, and transformer checkpoints served.

The emulator (PyPI gcp-storage-emulator) speaks the GCS JSON API to the official
google-cloud-storage client; nothing about the client is mocked.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from PIL import Image

from tests import helpers
from tests.tiny_models import LABELS, save_tiny_siglip, save_tiny_vit

pytestmark = pytest.mark.slow

BUCKET = "tikka-test-models"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("gcs")
    with helpers.gcs_emulator(data_dir) as url:
        yield url, data_dir


@pytest.fixture(scope="module")
def storage(emulator):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    client = gcs.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": emulator[0]},
    )
    client.create_bucket(BUCKET)
    return client


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A model store of its own, so these imports never touch the project's."""
    return tmp_path_factory.mktemp("bentoml-home")


def upload_dir(client, prefix: str, directory: Path) -> None:
    bucket = client.bucket(BUCKET)
    for path in sorted(directory.iterdir()):
        bucket.blob(f"{prefix}/{path.name}").upload_from_filename(str(path))


def download(store: Path, *args: str, emulator_url: str | None = None, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "BENTOML_HOME": str(store), **env}
    environment.pop("GOOGLE_APPLICATION_CREDENTIALS", None) if "GOOGLE_APPLICATION_CREDENTIALS" not in env else None
    if emulator_url:
        environment["STORAGE_EMULATOR_HOST"] = emulator_url
    else:
        environment.pop("STORAGE_EMULATOR_HOST", None)
    return subprocess.run(
        [sys.executable, "models/download_model.py", *args],
        cwd=helpers.ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def versions(store: Path, name: str) -> list[str]:
    root = store / "models" / name
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []


def assert_clean_failure(result: subprocess.CompletedProcess, code: int, *phrases: str) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")  # after any progress bar
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


def test_help_describes_both_sources(store):
    result = download(store, "--help")
    assert result.returncode == 0
    assert "--from-dir" in result.stdout and "STORAGE_EMULATOR_HOST" in result.stdout


@pytest.mark.parametrize(
    ("family", "save", "layers", "heads"),
    [("vit", save_tiny_vit, 2, 2), ("siglip", save_tiny_siglip, 3, 4)],
)
def test_transformer_checkpoint_from_gcs_is_served_with_attention_rollout(
    emulator, storage, store, tmp_path, photo, family, save, layers, heads
):
    checkpoint = save(tmp_path / family, layers=layers, heads=heads)
    upload_dir(storage, f"{family}/v1", checkpoint)
    name = f"tiny-{family}"

    first = download(store, "--bucket", BUCKET, "--prefix", f"{family}/v1", "--tag", name, emulator_url=emulator[0])
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"imported {name}:") and "download" in first.stderr  # tqdm bar
    (version,) = versions(store, name)
    info = yaml.safe_load((store / "models" / name / version / "model.yaml").read_text())
    assert info["metadata"]["source"] == f"gs://{BUCKET}/{family}/v1"
    assert info["metadata"]["labels"] == LABELS
    assert set(info["metadata"]["objects"]) == {"config.json", "model.safetensors", "preprocessor_config.json"}

    # A second run downloads nothing. Proof: the weights are corrupted on the
    # emulator's disk now, and a download would fail its checksum.
    weights = emulator[1] / ".cloudstorage" / BUCKET / family / "v1" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[::-1])
    second = download(store, "--bucket", BUCKET, "--prefix", f"{family}/v1", "--tag", name, emulator_url=emulator[0])
    assert second.returncode == 0, second.stderr
    assert "nothing downloaded" in second.stdout and versions(store, name) == [version]

    with helpers.served_bento(tmp_path / "home", {"TIKKA_MODEL_TAG": f"{name}:latest"}, store=store / "models") as url:
        predicted = httpx.post(
            f"{url}/predict", files={"image": ("pizza.jpg", photo("pizza.jpg"), "image/jpeg")}, timeout=60
        )
        assert predicted.status_code == 200, predicted.text
        body = predicted.json()
        assert body["model"] == f"{name}:{version}"
        assert len(body["predictions"]) == 5 and set(body["predictions"]) <= set(LABELS)

        explained = httpx.post(
            f"{url}/predict/explain", files={"image": ("g.jpg", photo("guacamole.jpg"), "image/jpeg")}, timeout=60
        )
        assert explained.status_code == 200, explained.text
        result = explained.json()
        assert result["method"] == "attention-rollout" and result["grid_size"] == "14x14"
        assert (result["num_layers"], result["num_heads"]) == (layers, heads)
        assert result["predicted_class"] in LABELS
        overlay = Image.open(io.BytesIO(base64.b64decode(result["attention_map"])))
        assert overlay.size == (427, 640)


def test_a_corrupted_object_fails_cleanly_and_keeps_the_previous_model(emulator, storage, store, tmp_path):
    upload_dir(storage, "corrupt", save_tiny_vit(tmp_path / "v1"))
    args = ("--bucket", BUCKET, "--prefix", "corrupt", "--tag", "tiny-corrupt")
    assert download(store, *args, emulator_url=emulator[0]).returncode == 0
    (good,) = versions(store, "tiny-corrupt")
    good_weights = (store / "models" / "tiny-corrupt" / good / "model.safetensors").read_bytes()

    # A new generation of the weights, then bit rot on the emulator's disk.
    newer = save_tiny_vit(tmp_path / "v2", layers=3)
    storage.bucket(BUCKET).blob("corrupt/model.safetensors").upload_from_filename(str(newer / "model.safetensors"))
    on_disk = emulator[1] / ".cloudstorage" / BUCKET / "corrupt" / "model.safetensors"
    data = bytearray(on_disk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    on_disk.write_bytes(bytes(data))

    result = download(store, *args, emulator_url=emulator[0])
    assert_clean_failure(result, 6, "CRC32C mismatch", "corrupt/model.safetensors", "store was not changed")
    assert versions(store, "tiny-corrupt") == [good]
    assert (store / "models" / "tiny-corrupt" / good / "model.safetensors").read_bytes() == good_weights
    latest = (store / "models" / "tiny-corrupt" / "latest").read_text().strip()
    assert latest == good


@pytest.mark.parametrize(
    ("files", "phrase"),
    [(["model.safetensors"], "no config.json"), (["config.json", "preprocessor_config.json"], "no weights")],
)
def test_a_prefix_that_is_not_a_checkpoint_is_refused(emulator, storage, store, tmp_path, files, phrase):
    checkpoint = save_tiny_vit(tmp_path / "full")
    prefix = f"partial-{len(files)}"
    for name in files:
        storage.bucket(BUCKET).blob(f"{prefix}/{name}").upload_from_filename(str(checkpoint / name))
    result = download(store, "--bucket", BUCKET, "--prefix", prefix, "--tag", "tiny-partial", emulator_url=emulator[0])
    assert_clean_failure(result, 5, phrase)
    assert versions(store, "tiny-partial") == []


def test_missing_bucket_and_missing_prefix_are_named(emulator, storage, store):
    no_bucket = download(store, "--bucket", "no-such-bucket", "--prefix", "x", emulator_url=emulator[0])
    assert_clean_failure(no_bucket, 4, "no-such-bucket", "does not exist")
    no_prefix = download(store, "--bucket", BUCKET, "--prefix", "nothing/here", emulator_url=emulator[0])
    assert_clean_failure(no_prefix, 4, f"gs://{BUCKET}/nothing/here/", "--prefix")


def test_an_unreachable_emulator_is_a_clear_error(store):
    with helpers.closed_port() as port:
        closed = f"http://127.0.0.1:{port}"
        result = download(store, "--bucket", BUCKET, "--prefix", "vit/v1", "--timeout", "3", emulator_url=closed)
    assert_clean_failure(result, 7, "cannot reach Cloud Storage", closed)


@pytest.mark.parametrize("key_file", ["missing", "malformed"])
def test_bad_credentials_are_a_clear_error(store, tmp_path, key_file):
    path = tmp_path / "key.json"
    if key_file == "malformed":
        path.write_text(json.dumps({"type": "service_account", "client_email": "x@y"}))
    result = download(
        store,
        "--bucket",
        BUCKET,
        "--prefix",
        "vit/v1",
        GOOGLE_APPLICATION_CREDENTIALS=str(path),
        GOOGLE_CLOUD_PROJECT="tikka-test",
    )
    assert_clean_failure(result, 2, "GOOGLE_APPLICATION_CREDENTIALS")


def test_a_local_directory_imports_without_a_bucket(store, tmp_path):
    checkpoint = save_tiny_siglip(tmp_path / "local")
    first = download(store, "--from-dir", str(checkpoint), "--tag", "tiny-local")
    assert first.returncode == 0 and first.stdout.startswith("imported tiny-local:"), first.stderr
    second = download(store, "--from-dir", str(checkpoint), "--tag", "tiny-local")
    assert second.returncode == 0 and "nothing downloaded" in second.stdout
    assert len(versions(store, "tiny-local")) == 1

    (checkpoint / "config.json").unlink()
    broken = download(store, "--from-dir", str(checkpoint), "--tag", "tiny-local")
    assert_clean_failure(broken, 5, "config.json")


def test_a_bento_built_with_a_model_tag_argument_serves_that_model(store, tmp_path, photo):
    """`bentoml build --arg model_tag=...` packages the model and serves it with no env var."""
    checkpoint = save_tiny_vit(tmp_path / "built")
    assert download(store, "--from-dir", str(checkpoint), "--tag", "tiny-built").returncode == 0
    (version,) = versions(store, "tiny-built")
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(store / "models")
    env = {**os.environ, "BENTOML_HOME": str(home)}
    env.pop("TIKKA_MODEL_TAG", None)
    built = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "--arg", "model_tag=tiny-built:latest", "-o", "tag"],
        cwd=helpers.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    bento_tag = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    with helpers.served_bento(home, store=store / "models", target=bento_tag) as url:
        response = httpx.post(
            f"{url}/predict", files={"image": ("p.jpg", photo("pizza.jpg"), "image/jpeg")}, timeout=60
        )
        assert response.status_code == 200, response.text
        assert response.json()["model"] == f"tiny-built:{version}"


def test_tikka_import_model_writes_the_store_it_is_given_and_logs_each_verified_object(
    emulator, storage, store, tmp_path
):
    """`tikka import-model` (make import-model): the store BENTOML_HOME names, each object's checksum
    in the log; `tikka models` then lists the model in that store."""
    upload_dir(storage, "cli/v1", save_tiny_vit(tmp_path / "vit", layers=2, heads=2))
    tikka = str(Path(sys.executable).parent / "tikka")
    # COLUMNS: Rich's tables fold long cells at 80 columns when the output is no terminal.
    env = {**os.environ, "BENTOML_HOME": str(store), "STORAGE_EMULATOR_HOST": emulator[0], "COLUMNS": "200"}
    imported = subprocess.run(
        [tikka, "import-model", "--bucket", BUCKET, "--prefix", "cli/v1", "--tag", "tiny-cli"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        assert re.search(rf"verified gs://{BUCKET}/cli/v1/{name}: \d+ bytes, CRC32C \S+", imported.stderr), name
    (version,) = versions(store, "tiny-cli")
    assert f"imported tiny-cli:{version}" in imported.stdout
    listed = subprocess.run([tikka, "models", "--url", "http://127.0.0.1:9"], env=env, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert listed.returncode == 0 and f"tiny-cli:{version}" in listed.stderr and "not reachable" in listed.stderr
