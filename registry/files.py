"""Which files a promoted run contributes to its version, and the model card written beside them.

A run whose output folder has an `export/` folder (the Tunix trainer's Hugging Face export:
model.safetensors, config.json, tokenizer.json) contributes exactly that folder plus a generated
`README.md`; any other run contributes its whole output folder, bounded by the
REGISTRY_MAX_VERSION_BYTES / REGISTRY_MAX_VERSION_FILES settings.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from runs.models import Run
from tunix_rt.exceptions import InvalidTransition

EXPORT_DIR = "export"
MODEL_CARD = "README.md"


@dataclass(frozen=True)
class SourceFile:
    path: str  # inside the version, posix
    source: Path | None = None
    content: bytes | None = None

    @property
    def size(self) -> int:
        return len(self.content) if self.content is not None else self.source.stat().st_size


def _regular_files(root: Path) -> list[tuple[str, Path]]:
    """Regular files under `root` (symbolic links are never followed), sorted by path."""
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        for name in sorted(names):
            path = Path(folder) / name
            if not path.is_symlink() and path.is_file():
                found.append((path.relative_to(root).as_posix(), path))
    return sorted(found)


def run_files_collect(*, run: Run, card: str) -> list[SourceFile]:
    """The files of the version promoted from `run` (409 when its folder is gone or too large).
    `card` is the model card, added only to an export folder."""
    root = Path(run.output_dir) if run.output_dir else None
    if root is None or not root.is_dir():
        raise InvalidTransition(
            f"run {run.pk}'s output folder is gone ({run.output_dir or 'none recorded'}): nothing to promote"
        )
    export = root / EXPORT_DIR
    if export.is_dir() and not export.is_symlink():
        files = [SourceFile(path, path_) for path, path_ in _regular_files(export) if path != MODEL_CARD]
        files.append(SourceFile(MODEL_CARD, content=card.encode()))
    else:
        files = [SourceFile(path, path_) for path, path_ in _regular_files(root)]
    limits = settings.TUNIX_RT
    if len(files) > limits["REGISTRY_MAX_VERSION_FILES"]:
        raise InvalidTransition(
            f"run {run.pk} has {len(files)} files, more than a version may hold "
            f"(REGISTRY_MAX_VERSION_FILES={limits['REGISTRY_MAX_VERSION_FILES']})"
        )
    total = sum(file.size for file in files)
    if total > limits["REGISTRY_MAX_VERSION_BYTES"]:
        raise InvalidTransition(
            f"run {run.pk}'s files hold {total} bytes, more than a version may hold "
            f"(REGISTRY_MAX_VERSION_BYTES={limits['REGISTRY_MAX_VERSION_BYTES']})"
        )
    if not files:
        raise InvalidTransition(f"run {run.pk}'s output folder holds no file: nothing to promote")
    return sorted(files, key=lambda file: file.path)


def model_card(*, model_name: str, version: int, lineage: dict, evaluation) -> str:
    """The README.md of an exported model: what it is, its data, hyperparameters and held-out results."""
    source = f"Tunix RT run {lineage['run_id']}"
    if lineage["job_id"]:
        source += f" (tuning job {lineage['job_id']} “{lineage['job_name']}”, trial {lineage['trial_number']})"
    dataset = f"`{lineage['dataset']}`"
    if lineage["dataset_hash"]:
        dataset += f" (content sha256 `{lineage['dataset_hash']}`)"
    lines = [
        f"# {model_name} v{version}",
        "",
        f"A `{lineage['trainer']}` model trained by {source}, exported in the Hugging Face format: "
        "`model.safetensors`, `config.json`, `tokenizer.json`.",
        "",
        "## Data",
        "",
        f"- dataset: {dataset}",
        "",
        "## Hyperparameters",
        "",
        "```json",
        json.dumps(lineage["hyperparameters"], indent=2, sort_keys=True),
        "```",
        "",
        "## Held-out results",
        "",
    ]
    if evaluation is None:
        lines.append("No evaluation was stored.")
    else:
        lines += ["| metric | value |", "|---|---|"]
        for name, value in sorted(evaluation.metrics.items()):
            marker = " (primary)" if name == evaluation.primary_metric else ""
            lines.append(f"| {name}{marker} | {value} |")
        if isinstance(evaluation.details, list) and evaluation.details:
            lines += ["", f"{len(evaluation.details)} held-out items were scored one by one."]
    return "\n".join(lines) + "\n"
