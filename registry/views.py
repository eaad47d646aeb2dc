"""Registry pages: the models list, a model with its versions, a version with its lineage and a
comparison, the download, and the forms that promote a run and move an alias.

Every read goes through the selectors' `visible_to` scoping: another user's model is a 404.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from runs.models import Run
from tunix_rt.exceptions import TunixRTError

from . import selectors, services
from .downloads import version_archive_response

MODELS_SHOWN = 500


@login_required
def model_list(request: HttpRequest) -> HttpResponse:
    """Every model the user may see, with version counts and aliases."""
    models = list(selectors.models_for_list(user=request.user)[:MODELS_SHOWN])
    return render(request, "registry/model_list.html", {"models": models})


@login_required
def model_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """A model: its versions (score, run, aliases, size), the alias form and the aliases' history."""
    model = selectors.model_visible(user=request.user, pk=pk)
    context = {
        "model": model,
        "versions": list(selectors.versions_for_model(model=model)),
        "history": list(selectors.alias_history(model=model)),
    }
    return render(request, "registry/model_detail.html", context)


@login_required
def version_detail(request: HttpRequest, pk: int, number: int) -> HttpResponse:
    """A version: lineage as links, files, scores; `?compare=N` sets it beside version N."""
    model = selectors.model_visible(user=request.user, pk=pk)
    version = selectors.version_for_number(model=model, number=number)
    others = [v for v in selectors.versions_for_model(model=model) if v.pk != version.pk]
    other = next((v for v in others if str(v.version) == request.GET.get("compare", "")), None)
    comparison = selectors.versions_compare(version=version, other=other) if other else None
    context = {"model": model, "version": version, "others": others, "other": other, "comparison": comparison}
    return render(request, "registry/version_detail.html", context)


@login_required
def version_download(request: HttpRequest, pk: int, number: int) -> HttpResponse:
    """The version's files, zipped (410 with a message when they are missing)."""
    model = selectors.model_visible(user=request.user, pk=pk)
    version = selectors.version_for_number(model=model, number=number)
    try:
        return version_archive_response(version)
    except TunixRTError as exc:
        return HttpResponse(exc.message, status=exc.status_code, content_type="text/plain; charset=utf-8")


@login_required
@require_POST
def alias_move(request: HttpRequest, pk: int) -> HttpResponse:
    """Point an alias at a version (the form on the model page)."""
    model = selectors.model_visible(user=request.user, pk=pk)
    alias, number = request.POST.get("alias", "").strip(), request.POST.get("version", "")
    try:
        if not number.isdigit():
            raise TunixRTError("choose a version", field="version")
        services.model_alias_move(model=model, alias=alias, version=int(number), by=request.user)
    except TunixRTError as exc:
        messages.error(request, f"The alias was not moved: {exc.message}")
    else:
        messages.success(request, f"Alias {alias} now points at v{number}.")
    return redirect("model_detail", pk=model.pk)


def _back(request: HttpRequest, fallback: str) -> str:
    target = request.POST.get("next", "")
    hosts = {request.get_host()}
    allowed = url_has_allowed_host_and_scheme(target, allowed_hosts=hosts, require_https=request.is_secure())
    return target if target and allowed else fallback


@login_required
@require_POST
def run_promote(request: HttpRequest, pk: int) -> HttpResponse:
    """Promote a succeeded run (the form on the run page and, with its best run, the job page)."""
    runs = Run.objects.visible_to(request.user).select_related("evaluation", "trial__job", "owner")
    run = get_object_or_404(runs, pk=pk)
    alias = request.POST.get("alias", "").strip() or None
    try:
        version, created = services.model_version_promote(
            run=run, by=request.user, model_name=request.POST.get("model", "").strip(), alias=alias
        )
    except TunixRTError as exc:
        messages.error(request, f"Not promoted: {exc.message}")
        return redirect(_back(request, reverse("run_detail", args=[run.pk])))
    verb = "Promoted" if created else "Already promoted:"
    messages.success(request, f"{verb} run {run.pk} as {version.model.name} v{version.version}.")
    return redirect("version_detail", pk=version.model_id, number=version.version)
