"""The registry's files through Django's storage API (`STORAGES["registry"]`): each file is a blob
named by its sha256, so identical files are stored once, whatever the backend (a folder, S3)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from django.core.files.base import ContentFile, File
from django.core.files.storage import Storage, storages

CHUNK = 1024 * 1024


def registry_storage() -> Storage:
    return storages["registry"]


def blob_name(sha256: str) -> str:
    return f"blobs/{sha256[:2]}/{sha256}"


def bytes_sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def blob_store(*, sha256: str, path: Path | None = None, content: bytes | None = None) -> None:
    """Store the file (or bytes) as the blob `sha256` unless that blob is already there."""
    storage = registry_storage()
    name = blob_name(sha256)
    if storage.exists(name):
        return
    if content is not None:
        saved = storage.save(name, ContentFile(content))
    else:
        with open(path, "rb") as fh:
            saved = storage.save(name, File(fh))
    if saved != name:  # another promotion stored the same content meanwhile: keep one copy
        storage.delete(saved)


def blobs_missing(manifest: list[dict]) -> list[str]:
    """Paths of the manifest whose blobs are not in the storage."""
    storage = registry_storage()
    return [entry["path"] for entry in manifest if not storage.exists(blob_name(entry["sha256"]))]


def blob_open(sha256: str) -> IO[bytes]:
    return registry_storage().open(blob_name(sha256), "rb")


class _ChunkSink(io.RawIOBase):
    """A write-only, unseekable stream that hands what is written to the generator below: zipfile
    then writes data descriptors and never seeks back, so the archive streams as it is made."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data, self.chunks = b"".join(self.chunks), []
        return data


def zip_stream(manifest: Iterable[dict], *, folder: str) -> Iterator[bytes]:
    """A zip archive of the manifest's blobs, under `folder/`, produced chunk by chunk."""
    sink = _ChunkSink()
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_DEFLATED) as archive:
        for entry in manifest:
            info = zipfile.ZipInfo(f"{folder}/{entry['path']}")
            info.compress_type = zipfile.ZIP_DEFLATED
            with blob_open(entry["sha256"]) as source, archive.open(info, "w", force_zip64=True) as target:
                while chunk := source.read(CHUNK):
                    target.write(chunk)
                    yield sink.take()
            yield sink.take()
    yield sink.take()
