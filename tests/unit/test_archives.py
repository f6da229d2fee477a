"""bulk_classify's archive reader: the images of a zip or tar, and every hostile archive refused
whole, from its index, before a member is inflated (each bound a setting, each tested)."""

from __future__ import annotations

import io
import resource
import stat
import tarfile
import zipfile

import pytest

from tikka.bulk.archives import Archive, ArchiveLimits
from tikka.errors import ArchiveTooLarge, NotAnArchive, NotAnImage, UnsafeArchive

LIMITS = ArchiveLimits(max_members=50, max_member_bytes=1_000_000)
PHOTO = b"\xff\xd8 bytes of a photo"


def zip_of(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def tar_of(members: dict[str, bytes], mode: str = "w:gz", links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return buffer.getvalue()


@pytest.mark.parametrize("make", [zip_of, tar_of, lambda m: tar_of(m, "w")], ids=["zip", "tar.gz", "tar"])
def test_the_images_are_listed_and_the_rest_counted(make):
    members = {
        "dinner/pizza.jpg": PHOTO,
        "dinner/IMG_0001.HEIC": PHOTO,
        "pxl.avif": PHOTO,
        "notes.txt": b"not a photo",
        "__MACOSX/dinner/._pizza.jpg": b"resource fork",
        ".hidden/x.png": PHOTO,
    }
    archive = Archive(make(members), LIMITS)
    assert [m.name for m in archive.images] == ["dinner/pizza.jpg", "dinner/IMG_0001.HEIC", "pxl.avif"]
    assert archive.skipped == 3
    assert archive.read(archive.images[0]) == PHOTO


@pytest.mark.parametrize(
    "name", ["../escape.jpg", "dinner/../../escape.jpg", "/etc/passwd.jpg", "C:/x.jpg", "..\\x.jpg"]
)
@pytest.mark.parametrize("make", [zip_of, tar_of], ids=["zip", "tar"])
def test_a_member_that_escapes_the_archive_refuses_it_whole(make, name):
    with pytest.raises(UnsafeArchive, match="escapes the archive"):
        Archive(make({"ok.jpg": PHOTO, name: PHOTO}), LIMITS)


def test_links_are_refused_in_a_tar_and_in_a_zip():
    with pytest.raises(UnsafeArchive, match="link"):
        Archive(tar_of({"ok.jpg": PHOTO}, links={"evil.jpg": "/etc/shadow"}), LIMITS)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("evil.jpg")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16  # as `zip --symlinks` writes one
        archive.writestr(info, "/etc/shadow")
    with pytest.raises(UnsafeArchive, match="link"):
        Archive(buffer.getvalue(), LIMITS)


@pytest.mark.parametrize("make", [zip_of, tar_of], ids=["zip", "tar"])
def test_more_members_than_the_limit_refuse_the_archive(make):
    with pytest.raises(ArchiveTooLarge, match="more than 50 members"):
        Archive(make({f"{i}.jpg": PHOTO for i in range(51)}), LIMITS)


@pytest.mark.parametrize("make", [zip_of, tar_of], ids=["zip", "tar.gz"])
def test_a_bomb_is_refused_from_its_index_at_bounded_memory(make):
    """200 MB of zeros in about 200 KB: refused before a byte of it is inflated."""
    bomb = make({"pizza.jpg": PHOTO, "bomb.jpg": bytes(200_000_000)})
    assert len(bomb) < 1_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ArchiveTooLarge, match="'bomb.jpg' inflates to 200000000 bytes"):
        Archive(bomb, LIMITS)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 50, f"the peak memory grew by {grown_mb:.0f} MB"


def test_a_zip_member_that_lies_about_its_size_is_read_no_further_than_the_limit():
    data = bytearray(zip_of({"liar.jpg": bytes(5_000_000)}))
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo("liar.jpg")
    # Its sizes in the central directory say 1000 bytes: the index passes, the read stops there.
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (1000).to_bytes(4, "little")
    archive = Archive(bytes(data), LIMITS)
    assert archive.images[0].size == 1000 and info.file_size == 5_000_000
    with pytest.raises(NotAnImage, match="corrupt"):  # what was read fails the CRC check
        archive.read(archive.images[0])


@pytest.mark.parametrize("data", [b"", b"plain text, not an archive", b"PK\x03\x04broken"])
def test_what_is_not_an_archive_says_so(data):
    with pytest.raises(NotAnArchive):
        Archive(data, LIMITS)
