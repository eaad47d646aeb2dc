"""Dataset pages: the visible trace datasets, and an upload form that calls the same service as the API."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from tunix_rt.exceptions import ValidationError

from . import services
from .models import TraceDataset
from .parsing import MAX_BYTES, MAX_LINE_CHARS, MAX_LINES


@login_required
def dataset_list(request: HttpRequest) -> HttpResponse:
    """Built-in and own datasets; POST uploads a JSON-lines file as a new version."""
    services.trace_dataset_builtins_ensure()
    errors: dict = {}
    if request.method == "POST":
        upload = request.FILES.get("file")
        try:
            if upload is None:
                raise ValidationError("choose a JSON-lines file", field="file")
            if upload.size > MAX_BYTES:
                raise ValidationError(
                    f"file is {upload.size} bytes; at most {MAX_BYTES} bytes are allowed", field="file"
                )
            try:
                fraction = float(request.POST.get("eval_fraction") or 0.1)
            except ValueError:
                raise ValidationError("must be a number between 0 and 1", field="eval_fraction") from None
            dataset = services.trace_dataset_create(
                owner=request.user,
                name=request.POST.get("name", "").strip(),
                content=upload.read(),
                eval_fraction=fraction,
                description=request.POST.get("description", ""),
            )
        except ValidationError as exc:
            errors = exc.as_dict()
        else:
            messages.success(
                request,
                f"Registered {dataset.reference}: {dataset.train_count} train, {dataset.eval_count} held-out traces.",
            )
            return redirect("dataset_list")
    datasets = TraceDataset.objects.visible_to(request.user).select_related("owner").defer("train_items", "eval_items")
    context = {
        "datasets": datasets,
        "errors": errors,
        "form": request.POST if errors else {},
        "limits": {"bytes": MAX_BYTES, "lines": MAX_LINES, "line_chars": MAX_LINE_CHARS},
    }
    return render(request, "traces/dataset_list.html", context, status=400 if errors else 200)
