"""Dataset pages: the visible trace datasets, and an upload form that calls the same service as the API."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from tunix_rt.exceptions import ValidationError

from . import services
from .api.serializers import TraceDatasetInputSerializer
from .models import TraceDataset
from .parsing import MAX_BYTES, MAX_LINE_CHARS, MAX_LINES


@login_required
def dataset_list(request: HttpRequest) -> HttpResponse:
    """Built-in and own datasets; POST uploads a JSON-lines file as a new version."""
    services.trace_dataset_builtins_ensure()
    errors: dict = {}
    if request.method == "POST":
        # The API's input serializer: the same bounds (file size, fraction) as POST /api/datasets/.
        form = TraceDatasetInputSerializer(
            data={
                "name": request.POST.get("name", "").strip(),
                "description": request.POST.get("description", ""),
                "eval_fraction": request.POST.get("eval_fraction") or 0.1,
                **({"file": request.FILES["file"]} if "file" in request.FILES else {}),
            }
        )
        try:
            if "file" not in request.FILES:
                raise ValidationError("choose a JSON-lines file", field="file")
            if not form.is_valid():
                raise ValidationError("invalid upload", errors=form.errors)
            dataset = services.trace_dataset_create(owner=request.user, **form.validated_data)
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
