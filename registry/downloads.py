"""A version's download, shared by the API and the pages: a streamed zip, or a clear 410."""

from __future__ import annotations

from django.http import StreamingHttpResponse

from tunix_rt.exceptions import TunixRTError

from .models import ModelVersion
from .storage import blobs_missing, zip_stream


class FilesMissing(TunixRTError):
    """A version's files are no longer in the registry storage (HTTP 410)."""

    status_code = 410
    default_code = "gone"


def version_archive_response(version: ModelVersion) -> StreamingHttpResponse:
    """The version's files as a streamed zip; 410 (never a 500) when any of them is missing."""
    missing = blobs_missing(version.manifest)
    if missing:
        raise FilesMissing(
            f"{version} cannot be downloaded: {len(missing)} of its files are missing from the registry storage "
            f"(first: {missing[0]}); restore the storage or promote the run again as a new version"
        )
    folder = f"{version.model.name}-v{version.version}"
    response = StreamingHttpResponse(zip_stream(version.manifest, folder=folder), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{folder}.zip"'
    return response
