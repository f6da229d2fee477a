"""The images in an uploaded zip or tar (plain, gzip, bzip2 or xz), checked from the archive's
index before a member is inflated.

A hostile archive is refused whole, with the reason: a member that could escape the archive
(``../``, an absolute name), a link or a device, more members than allowed, or a member that
inflates past the limit (a zip bomb). Members are then read one at a time, each at most its
limit, so memory stays bounded by one member whatever the archive says.
"""

from __future__ import annotations

import io
import stat
import tarfile
import threading
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath

from tikka.errors import ArchiveTooLarge, NotAnArchive, NotAnImage, UnsafeArchive
from tikka.model.formats import EXTENSIONS


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int  # every entry counts, folders and non-images too
    max_member_bytes: int  # one member, uncompressed


@dataclass(frozen=True)
class Member:
    name: str
    size: int  # uncompressed, as the archive declares it


def checked_name(raw: str) -> str:
    """The member's name, or ``UnsafeArchive`` when it could land outside a folder it were extracted to."""
    name = raw.replace("\\", "/")
    path = PurePosixPath(name)
    if "\x00" in name or path.is_absolute() or (len(name) > 1 and name[1] == ":") or ".." in path.parts:
        raise UnsafeArchive(f"the archive member {raw!r} escapes the archive; nothing was classified")
    return name


def is_image_member(name: str) -> bool:
    """An image by its ending, and not macOS's metadata (``__MACOSX/``, ``._photo.jpg``) or another hidden file."""
    parts = PurePosixPath(name).parts
    hidden = any(part.startswith(".") or part == "__MACOSX" for part in parts)
    return bool(parts) and not hidden and PurePosixPath(name).suffix.lower().lstrip(".") in EXTENSIONS


class Archive:
    """An opened, checked archive: ``images`` to ``read``, and how many other files it held."""

    def __init__(self, data: bytes, limits: ArchiveLimits) -> None:
        self.limits = limits
        self.lock = threading.Lock()  # zipfile and tarfile share one file position
        buffer = io.BytesIO(data)
        if zipfile.is_zipfile(buffer):
            self.zip, self.tar = zipfile.ZipFile(buffer), None
            entries = self.zip_entries()
        else:
            buffer.seek(0)
            try:
                self.tar, self.zip = tarfile.open(fileobj=buffer, mode="r:*"), None
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise NotAnArchive(f"the archive is neither a zip nor a tar (plain or gzip): {exc}") from None
            entries = self.tar_entries()
        self.images = [member for member in entries if is_image_member(member.name)]
        self.skipped = len(entries) - len(self.images)

    def count(self, seen: int) -> None:
        if seen > self.limits.max_members:
            raise ArchiveTooLarge(f"the archive has more than {self.limits.max_members} members, the limit")

    def check_size(self, name: str, size: int) -> None:
        if size > self.limits.max_member_bytes:
            raise ArchiveTooLarge(
                f"the archive member {name!r} inflates to {size} bytes; the limit is {self.limits.max_member_bytes}"
            )

    def zip_entries(self) -> list[Member]:
        entries = []
        for seen, info in enumerate(self.zip.infolist(), start=1):
            self.count(seen)
            name = checked_name(info.filename)
            # The Unix file type, where the zip was made on Unix (0: none said, a plain file).
            if stat.S_IFMT(info.external_attr >> 16) not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise UnsafeArchive(f"the archive member {name!r} is a link or a device; nothing was classified")
            if info.is_dir():
                continue
            self.check_size(name, info.file_size)
            entries.append(Member(name, info.file_size))
        return entries

    def tar_entries(self) -> list[Member]:
        entries, seen = [], 0
        try:
            # Member by member: a header's size is checked before the next header is read,
            # so a bomb is refused without inflating what follows it.
            while (info := self.tar.next()) is not None:
                seen += 1
                self.count(seen)
                name = checked_name(info.name)
                if not (info.isreg() or info.isdir()):
                    raise UnsafeArchive(f"the archive member {name!r} is a link or a device; nothing was classified")
                if info.isreg():
                    self.check_size(name, info.size)
                    entries.append(Member(name, info.size))
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise NotAnArchive(f"the tar archive is corrupt: {exc}") from None
        return entries

    def read(self, member: Member) -> bytes:
        """The member's bytes, never more than its limit (a zip's sizes are the archive's word
        for it): ``NotAnImage`` for a member that is corrupt, ``ArchiveTooLarge`` for one that lied."""
        limit = self.limits.max_member_bytes
        try:
            with self.lock:
                if self.zip is not None:
                    with self.zip.open(member.name) as handle:
                        data = handle.read(limit + 1)
                else:
                    handle = self.tar.extractfile(member.name)
                    data = handle.read(limit + 1) if handle else b""
        except (zipfile.BadZipFile, zlib.error, tarfile.TarError, EOFError, OSError) as exc:
            raise NotAnImage(f"the archive member is corrupt ({exc})") from None
        if len(data) > limit:
            self.check_size(member.name, len(data))
        return data
