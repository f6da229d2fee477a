"""A bucket of photos as a `bulk_classify` source: ``gs://bucket/prefix``, listed, read one
image at a time, and the rows written back beside them (``<prefix>/predictions.jsonl``).

Through the official client (google-cloud-storage), which resolves Application Default
Credentials, ``GOOGLE_CLOUD_PROJECT`` and ``STORAGE_EMULATOR_HOST`` itself. Its calls block,
so the gateway runs them in worker threads.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

from tikka.bulk.archives import is_image_member
from tikka.errors import BadSource, SourceForbidden, SourceNotFound, SourceUnreachable, UploadTooLarge

# A bucket name as Cloud Storage allows it, then an optional prefix. No named groups: the
# OpenAPI document publishes this pattern, and ECMA regexes (what validators run) have none.
SOURCE = re.compile(r"^gs://([a-z0-9][a-z0-9._-]{1,220}[a-z0-9])(?:/(.*))?$")
RESULT_NAME = "predictions.jsonl"


def check_request(has_archive: bool, source: str | None) -> None:
    """A bulk_classify request names one of the two: ``BadSource`` otherwise, or for a source
    that is no gs:// URL."""
    if has_archive == bool(source):
        sent = "both were sent" if has_archive else "neither was sent"
        raise BadSource(f"send `archive` (a zip or tar of photos) or `source` (gs://bucket/prefix): {sent}")
    if source:
        Source.parse(source)


@dataclass(frozen=True)
class Source:
    bucket: str
    prefix: str  # "" or ending in "/"

    @classmethod
    def parse(cls, text: str) -> Source:
        match = SOURCE.match(text.strip())
        if not match:
            raise BadSource(f"source must look like gs://bucket/prefix, not {text[:200]!r}")
        bucket, prefix = match.group(1), (match.group(2) or "").strip("/")
        return cls(bucket, f"{prefix}/" if prefix else "")

    def __str__(self) -> str:
        return f"gs://{self.bucket}/{self.prefix}"

    @property
    def result(self) -> str:
        return f"{self}{RESULT_NAME}"


@dataclass(frozen=True)
class Blob:
    name: str  # the object's full name in the bucket
    size: int


class Bucket:
    """The images under a source, and the writes back to it."""

    def __init__(self, source: Source, timeout_s: float) -> None:
        from google.cloud import storage

        self.source, self.timeout_s = source, timeout_s
        with self.errors():
            self.bucket = storage.Client().bucket(source.bucket)

    def images(self, max_images: int) -> tuple[list[Blob], int]:
        """(the images under the prefix, how many other objects there were), or ``BadSource``."""
        with self.errors():
            blobs = self.bucket.list_blobs(prefix=self.source.prefix, timeout=self.timeout_s)
            names = [(blob.name, int(blob.size or 0)) for blob in blobs if not blob.name.endswith("/")]
        images = [Blob(name, size) for name, size in names if is_image_member(name[len(self.source.prefix) :])]
        if not images:
            raise BadSource(f"no images under {self.source} ({len(names)} other objects)")
        if len(images) > max_images:
            raise BadSource(f"{self.source} holds {len(images)} images; one task takes at most {max_images}")
        return images, len(names) - len(images)

    def read(self, blob: Blob, max_bytes: int) -> bytes:
        if blob.size > max_bytes:
            raise UploadTooLarge(f"the object is {blob.size} bytes; the limit is {max_bytes}")
        with self.errors():
            return self.bucket.blob(blob.name).download_as_bytes(timeout=self.timeout_s)

    def write_result(self, jsonl: str) -> None:
        with self.errors():
            self.bucket.blob(self.source.prefix + RESULT_NAME).upload_from_string(
                jsonl, content_type="application/x-ndjson", timeout=self.timeout_s
            )

    @contextlib.contextmanager
    def errors(self):
        """The client's failures as the service's errors: the source named, the fix said."""
        import google.auth.exceptions
        import requests
        from google.api_core import exceptions as api

        try:
            yield
        except api.NotFound:
            raise SourceNotFound(f"{self.source}: the bucket or the object does not exist") from None
        except (api.Unauthorized, api.Forbidden, google.auth.exceptions.GoogleAuthError) as exc:
            raise SourceForbidden(
                f"{self.source}: the service's credentials were refused ({type(exc).__name__});"
                " grant its account roles/storage.objectUser on the bucket"
            ) from None
        except (requests.exceptions.RequestException, api.GoogleAPICallError, ConnectionError, TimeoutError) as exc:
            raise SourceUnreachable(f"cannot reach Cloud Storage for {self.source} ({type(exc).__name__})") from None
