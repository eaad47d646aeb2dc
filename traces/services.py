"""Creating trace datasets: parse, validate and store one immutable version, all or nothing."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import Max

from tunix_rt.exceptions import ValidationError

from .models import TraceDataset
from .parsing import TraceFormatError, parse_traces

logger = logging.getLogger(__name__)
DATA_DIR = Path(__file__).resolve().parent / "data"
# Built-in datasets: name -> (file under traces/data, description). Registered lazily, owner None.
BUILTIN_DATASETS = {
    "addition": (
        "addition.jsonl",
        "Two-digit additions solved digit by digit with the carry spelled out (3000 train, 200 held-out pairs).",
    ),
}
BUILTIN_VERSION = 1
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
MAX_DESCRIPTION_LENGTH = 2000


def trace_dataset_create(
    *, owner, name: str, content: bytes | str, eval_fraction: float = 0.1, description: str = ""
) -> TraceDataset:
    """Store a new version of the dataset `name` (version = previous + 1), or raise
    ValidationError naming the field (bad lines are listed with their line number)."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValidationError("must be 1-100 characters: lowercase letters, digits, '-' or '_'", field="name")
    if name in BUILTIN_DATASETS:
        raise ValidationError(f"{name!r} is the name of a built-in dataset", field="name")
    if isinstance(eval_fraction, bool) or not isinstance(eval_fraction, (int, float)) or not 0 < eval_fraction < 1:
        raise ValidationError("must be a number between 0 and 1 (exclusive)", field="eval_fraction")
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise ValidationError(f"must be at most {MAX_DESCRIPTION_LENGTH} characters", field="description")
    try:
        parsed = parse_traces(content, eval_fraction=float(eval_fraction))
    except TraceFormatError as exc:
        raise ValidationError("invalid dataset", errors={"file": exc.errors}) from None
    with transaction.atomic():
        others = TraceDataset.objects.filter(name=name).exclude(owner=owner)
        if others.exists():
            raise ValidationError(f"the name {name!r} belongs to another user's dataset", field="name")
        latest = TraceDataset.objects.filter(name=name).aggregate(v=Max("version"))["v"] or 0
        try:
            return TraceDataset.objects.create(
                owner=owner,
                name=name,
                version=latest + 1,
                description=description,
                content_hash=parsed.content_hash,
                eval_fraction=float(eval_fraction),
                train_count=len(parsed.train),
                eval_count=len(parsed.eval),
                train_items=parsed.train,
                eval_items=parsed.eval,
            )
        except IntegrityError:
            raise ValidationError(f"{name!r} was just created by another request; retry", field="name") from None


def trace_dataset_builtins_ensure() -> None:
    """Register the built-in datasets shipped under traces/data (idempotent, one query when done)."""
    present = set(
        TraceDataset.objects.filter(owner__isnull=True, version=BUILTIN_VERSION, name__in=BUILTIN_DATASETS).values_list(
            "name", flat=True
        )
    )
    for name, (filename, description) in BUILTIN_DATASETS.items():
        if name in present:
            continue
        parsed = parse_traces((DATA_DIR / filename).read_bytes())
        try:
            with transaction.atomic():
                TraceDataset.objects.create(
                    owner=None,
                    name=name,
                    version=BUILTIN_VERSION,
                    description=description,
                    content_hash=parsed.content_hash,
                    train_count=len(parsed.train),
                    eval_count=len(parsed.eval),
                    train_items=parsed.train,
                    eval_items=parsed.eval,
                )
        except IntegrityError:  # registered concurrently by another process
            pass


def trace_dataset_references() -> tuple[str, ...]:
    """Every `name@version` a run may use: the built-ins (registered or not yet) and stored ones."""
    builtin = {f"{name}@{BUILTIN_VERSION}" for name in BUILTIN_DATASETS}
    try:
        with transaction.atomic():  # a savepoint: a failed query must not break the caller's transaction
            stored = list(TraceDataset.objects.values_list("name", "version"))
    except DatabaseError as exc:
        # Listing trainers must work before `migrate` created the table (checks, schema generation).
        logger.warning("trace datasets unavailable (%s); listing the built-in ones only", exc)
        stored = []
    return tuple(sorted(builtin | {f"{name}@{version}" for name, version in stored}))


def trace_dataset_resolve(*, reference: str) -> TraceDataset:
    """The dataset a run names, registering built-ins on first use."""
    dataset = TraceDataset.objects.by_reference(reference)
    if dataset is None:
        trace_dataset_builtins_ensure()
        dataset = TraceDataset.objects.by_reference(reference)
    if dataset is None:
        raise ValidationError(f"unknown trace dataset {reference!r}", field="dataset")
    return dataset
