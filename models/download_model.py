#!/usr/bin/env python
"""Import an image-classification checkpoint into the BentoML model store.

From Google Cloud Storage (the production path):

    python models/download_model.py --bucket tikkamasalai-models --prefix food-101-93m

syncs gs://BUCKET/PREFIX (config.json, weights, preprocessor_config.json) into a
temporary directory, verifies every object's CRC32C (or MD5) against the
bucket's metadata, and imports it as TAG:<content version>. Credentials come
from Application Default Credentials or GOOGLE_APPLICATION_CREDENTIALS, the
project from GOOGLE_CLOUD_PROJECT, and STORAGE_EMULATOR_HOST points the client
at an emulator, all as the google-cloud-storage library does it. Running it
again with nothing changed in the bucket downloads nothing.

From a local directory (weights already on disk, no bucket):

    python models/download_model.py --from-dir ./my-checkpoint

Serve the result with TIKKA_MODEL_TAG=<tag>:latest (see docs/architecture.md).
Exit codes: 0 ok, 2 credentials, 3 access denied, 4 bucket/prefix/dir not found,
5 not a checkpoint, 6 checksum mismatch, 7 storage unreachable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tikka.settings import get_settings  # noqa: E402
from tikka.tools.artifacts import ArtifactError, import_from_dir, import_from_gcs  # noqa: E402


def parse_args(argv: list[str] | None):
    settings = get_settings()
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--bucket", default=settings.gcs_bucket, help="GCS bucket (default: %(default)s, TIKKA_GCS_BUCKET)"
    )
    source.add_argument("--from-dir", type=Path, help="import a local checkpoint directory instead")
    parser.add_argument(
        "--prefix", default=settings.gcs_prefix, help="folder in the bucket (default: %(default)s, TIKKA_GCS_PREFIX)"
    )
    parser.add_argument(
        "--tag",
        default=settings.gcs_model_name,
        help="model name in the store (default: %(default)s); the version is derived from the content",
    )
    parser.add_argument("--project", default=None, help="GCP project (default: GOOGLE_CLOUD_PROJECT / ADC)")
    parser.add_argument(
        "--tag-file", type=Path, help="write the imported model's store tag to this file (for the build scripts)"
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds per storage call, retries included (default: %(default)s)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    name = args.tag.split(":")[0]
    try:
        if args.from_dir:
            source = str(args.from_dir)
            result = import_from_dir(args.from_dir, name)
        else:
            source = f"gs://{args.bucket}/{args.prefix.strip('/')}"
            result = import_from_gcs(args.bucket, args.prefix, name, project=args.project, timeout=args.timeout)
    except ArtifactError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: the store was not changed", file=sys.stderr)
        return 130
    model = result.model
    if result.imported:
        print(
            f"imported {model.tag} ({model.info.metadata.get('num_labels')} labels,"
            f" {result.downloaded_bytes} bytes downloaded) from {source}"
        )
    else:
        print(f"{model.tag} is up to date with {source}; nothing downloaded")
    if args.tag_file:
        args.tag_file.write_text(str(model.tag))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
