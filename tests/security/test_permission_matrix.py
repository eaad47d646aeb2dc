"""Every route × {owner, other user, staff, anonymous}.

Complete by construction: `test_every_route_is_in_the_matrix` walks `get_resolver()` and fails on any
route missing from ROUTES, so a new route cannot ship without saying who may use it. The admin is
covered by a rule (everything under admin/ is staff-only) and each of its routes is requested.

Expectations: anonymous → 401/403 (API) or a login redirect (pages); another user → 404 for any
object and never sees one in a list; staff see everything but the API tokens of others (personal: they
revoke them in the admin); login, logout, the password token endpoint and
health are open.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from registry import services as registry_services
from runs.models import Evaluation, Run
from tests.factories import ApiTokenFactory, RunFactory, TrialFactory, TuningJobFactory, UserFactory
from tests.ui.test_job_form import form_data
from traces.models import TraceDataset

SECRET_JOB = "secret-job-7f3a"
SECRET_RUN = "secret-run-9c1e"
SECRET_TRIAL_RUN = "secret-trial-run-4d2b"
SECRET_DATASET = "secret-dataset-5e8a"
SECRET_TOKEN = "secret-token-name-2b7c"
SECRET_MODEL = "secret-model-3f9d"
ROLES = ("owner", "other", "staff", "anonymous")

# Scopes: a route about one object of the world (its key in `world`), or a list that must show these
# names to owner and staff only. A new kind of object: build it in `world`, add it here.
OBJECT_SCOPES = ("job", "run", "dataset", "token", "model")
LIST_SECRETS = {
    "jobs": (SECRET_JOB,),
    "runs": (SECRET_RUN, SECRET_TRIAL_RUN),
    "datasets": (SECRET_DATASET,),
    "tokens": (SECRET_TOKEN,),
    "models": (SECRET_MODEL,),
}
ALL_SECRETS = (SECRET_JOB, SECRET_RUN, SECRET_TRIAL_RUN, SECRET_DATASET, SECRET_TOKEN, SECRET_MODEL)
# Personal scopes: staff are just another user there (404, not in lists); they revoke tokens in the admin.
PERSONAL_SCOPES = ("token", "tokens")

# Access kinds. OPEN: anyone. API: signed-in users, else 401/403. PAGE: signed-in users, else a
# redirect to the login page.
OPEN, API, PAGE = "open", "api", "page"


@dataclass(frozen=True)
class Req:
    method: str = "get"
    ok: tuple[int, ...] = (200,)  # what a caller allowed to do it gets
    data: dict | None = None
    htmx: bool = False
    json: bool = False


@dataclass(frozen=True)
class Route:
    access: str
    # "job" / "run": the path names that object (another user → 404). "jobs" / "runs": a list that
    # must show the secret to owner and staff only. None: the same for every signed-in user.
    scope: str | None = None
    requests: tuple[Req, ...] = field(default=(Req(),))


GOOD_JOB = {
    "name": "new job",
    "trainer": "sklearn-mlp",
    "dataset": "digits",
    "search_space": {"learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-1}},
}
GOOD_RUN = {"trainer": "sklearn-mlp", "dataset": "digits", "hyperparameters": {"epochs": 1}}
GOOD_FORM = form_data(name="form job")

ROUTES: dict[str, Route] = {
    # Authentication and health: open.
    "accounts/login/": Route(OPEN),
    "accounts/logout/": Route(OPEN, requests=(Req("post", ok=(302,)),)),
    "api-auth/login/": Route(OPEN),
    "api-auth/logout/": Route(OPEN, requests=(Req("post", ok=(200, 302)),)),
    "api/auth/token/": Route(OPEN, requests=(Req("post", ok=(400,), data={"username": "x", "password": "y"}),)),
    "health/": Route(OPEN),
    # API tokens: each user's own, for staff too.
    "accounts/tokens/": Route(PAGE, "tokens", (Req(), Req("post", ok=(200,), data={"name": "matrix token"}))),
    "accounts/tokens/{pk}/revoke/": Route(PAGE, "token", (Req("post", ok=(302,)),)),
    "api/auth/tokens/": Route(API, "tokens", (Req(), Req("post", ok=(201,), data={"name": "matrix token"}, json=True))),
    "api/auth/tokens/{pk}/": Route(API, "token", (Req(), Req("delete", ok=(204,)))),
    # Trace datasets: built-in ones for everyone, uploads for their owner (and staff).
    "api/datasets/": Route(API, "datasets"),
    "api/datasets/{pk}/": Route(API, "dataset"),
    "datasets/": Route(PAGE, "datasets"),
    "accounts/password_change/": Route(PAGE),
    "accounts/password_change/done/": Route(PAGE),
    # API: schema and docs.
    "api/schema/": Route(API),
    "api/docs/": Route(API),
    "api/": Route(API),
    "api/tuning/": Route(API),
    # Runs API.
    "api/runs/": Route(API, "runs", (Req(), Req("post", ok=(201,), data=GOOD_RUN, json=True))),
    "api/runs/{pk}/": Route(API, "run"),
    "api/runs/{pk}/metrics/": Route(API, "run"),
    "api/runs/{pk}/logs/": Route(API, "run"),
    "api/runs/{pk}/artifacts/": Route(API, "run"),
    "api/runs/{pk}/artifacts/{path}": Route(API, "run"),
    "api/runs/{pk}/cancel/": Route(API, "run", (Req("post", ok=(202,)),)),
    "api/trainers/": Route(API),
    "api/trainers/{name}/": Route(API),
    # Tuning API.
    "api/tuning/jobs/": Route(API, "jobs", (Req(), Req("post", ok=(201,), data=GOOD_JOB, json=True))),
    "api/tuning/jobs/{pk}/": Route(API, "job"),
    "api/tuning/jobs/{pk}/trials/": Route(API, "job"),
    "api/tuning/jobs/{pk}/start/": Route(API, "job", (Req("post", ok=(202,)),)),
    "api/tuning/jobs/{pk}/cancel/": Route(API, "job", (Req("post", ok=(200,)),)),
    # Resuming the world's job (created, never run) is refused with 409: reachable, not allowed.
    "api/tuning/jobs/{pk}/resume/": Route(API, "job", (Req("post", ok=(409,)),)),
    "api/tuning/jobs/{pk}/clone/": Route(API, "job", (Req("post", ok=(201,)),)),
    # Pages and their htmx fragments.
    "": Route(PAGE, "jobs", (Req(), Req(htmx=True))),
    "jobs/new/": Route(PAGE, None, (Req(), Req(htmx=True), Req("post", ok=(302,), data=GOOD_FORM))),
    "jobs/{pk}/": Route(PAGE, "job", (Req(), Req(htmx=True))),
    "jobs/{pk}/charts/": Route(PAGE, "job", (Req(htmx=True),)),
    "jobs/{pk}/start/": Route(PAGE, "job", (Req("post", ok=(302,), htmx=True),)),
    "jobs/{pk}/cancel/": Route(PAGE, "job", (Req("post", ok=(302,), htmx=True),)),
    "jobs/{pk}/resume/": Route(PAGE, "job", (Req("post", ok=(409,), htmx=True),)),
    "jobs/{pk}/clone/": Route(PAGE, "job", (Req("post", ok=(302,)),)),
    "runs/": Route(PAGE, "runs", (Req(), Req(htmx=True))),
    "runs/{pk}/": Route(PAGE, "run", (Req(), Req(htmx=True))),
    # Model registry (the world's run is queued, so promoting it is refused: reachable, not allowed).
    "api/runs/{pk}/promote/": Route(API, "run", (Req("post", ok=(409,), data={"model": "m"}, json=True),)),
    "api/tuning/jobs/{pk}/promote/": Route(API, "job", (Req("post", ok=(409,), data={"model": "m"}, json=True),)),
    "api/models/": Route(API, "models", (Req(), Req("post", ok=(201,), data={"name": "matrix-model"}, json=True))),
    "api/models/{name}/": Route(API, "model"),
    "api/models/{name}/versions/": Route(API, "model"),
    "api/models/{name}/versions/{number}/": Route(API, "model"),
    "api/models/{name}/versions/{number}/download/": Route(API, "model"),
    "api/models/{name}/aliases/{alias}/": Route(
        API, "model", (Req(), Req("put", ok=(200,), data={"version": 1}, json=True), Req("delete", ok=(204,)))
    ),
    "models/": Route(PAGE, "models"),
    "models/{pk}/": Route(PAGE, "model"),
    "models/{pk}/aliases/": Route(PAGE, "model", (Req("post", ok=(302,), data={"alias": "staging", "version": "1"}),)),
    "models/{pk}/versions/{number}/": Route(PAGE, "model"),
    "models/{pk}/versions/{number}/download/": Route(PAGE, "model"),
    "models/promote/run/{pk}/": Route(PAGE, "run", (Req("post", ok=(302,), data={"model": "m"}),)),
}
ADMIN_PREFIX = "admin/"
ADMIN_OPEN = {"admin/login/", "admin/logout/"}

_FORMAT_SUFFIX = re.compile(r"(\\\.\(\?P<format>[^)]*\)/\?|<drf_format_suffix:format>)")
_REGEX_ARG = re.compile(r"\(\?P<(\w+)>[^)]*\)")
_CONVERTER_ARG = re.compile(r"<(?:\w+:)?(\w+)>")


def _walk(resolver: URLResolver, prefix: str = ""):
    for pattern in resolver.url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern, route)
        else:
            assert isinstance(pattern, URLPattern)
            yield route


def normalise(route: str) -> str:
    """'api/tuning/^jobs/(?P<pk>[^/.]+)/start/$' → 'api/tuning/jobs/{pk}/start/'."""
    route = route.replace("^", "").replace("$", "")
    route = _REGEX_ARG.sub(r"{\1}", route)
    return _CONVERTER_ARG.sub(r"{\1}", route)


def all_routes() -> list[str]:
    routes = []
    for route in _walk(get_resolver()):
        name = normalise(route)
        if name not in routes:
            routes.append(name)
    return routes


def test_every_route_is_in_the_matrix():
    routes = all_routes()
    missing = [r for r in routes if not r.startswith(ADMIN_PREFIX) and r not in ROUTES]
    assert not missing, f"routes with no permission rule: add them to ROUTES in {__file__}: {missing}"
    stale = [r for r in ROUTES if r not in routes]
    assert not stale, f"ROUTES names routes that no longer exist: {stale}"
    assert any(r.startswith(ADMIN_PREFIX) for r in routes)


def test_no_format_suffix_routes():
    """DRF's `.json` twins passed `format=` to custom actions (500); the routers leave them out."""
    assert not [route for route in _walk(get_resolver()) if _FORMAT_SUFFIX.search(route)]


# --- the world every case runs in ------------------------------------------------------------------


@pytest.fixture
def world(db, settings, tmp_path):
    settings.TUNIX_RT = {**settings.TUNIX_RT, "MAX_ACTIVE_JOBS_PER_USER": 100, "MAX_ACTIVE_RUNS_PER_USER": 100}
    owner, other = UserFactory(), UserFactory()
    staff = UserFactory(is_staff=True, is_superuser=True)
    job = TuningJobFactory(owner=owner, name=SECRET_JOB)
    trial_run = RunFactory(owner=owner, name=SECRET_TRIAL_RUN)
    TrialFactory(job=job, run=trial_run)
    output = tmp_path / "run-output"
    output.mkdir()
    (output / "model.txt").write_text("weights")
    run = RunFactory(owner=owner, name=SECRET_RUN, output_dir=str(output))
    # Each user has something of their own too, so "other" sees a non-empty list.
    TuningJobFactory(owner=other, name="other's job")
    RunFactory(owner=other, name="other's run")
    dataset = TraceDataset.objects.create(
        owner=owner, name=SECRET_DATASET, content_hash="x", train_count=1, eval_count=1
    )
    token = ApiTokenFactory(user=owner, name=SECRET_TOKEN)
    ApiTokenFactory(user=other, name="other's token")
    model = _registered_model(owner, tmp_path, settings)
    registry_services.registered_model_create(owner=other, name="others-model")
    return {
        "owner": owner, "other": other, "staff": staff, "job": job, "run": run, "dataset": dataset, "token": token,
        "model": model,
    }  # fmt: skip


def _registered_model(owner, tmp_path, settings):
    """The owner's model SECRET_MODEL with version 1 (alias `champion`), its files in a test storage."""
    settings.STORAGES = {**settings.STORAGES, "registry": {"BACKEND": "django.core.files.storage.InMemoryStorage"}}
    output = tmp_path / "promoted-output"
    output.mkdir()
    (output / "model.pkl").write_bytes(b"weights")
    run = RunFactory(owner=owner, status=Run.Status.SUCCEEDED, output_dir=str(output))
    Evaluation.objects.create(run=run, metrics={"accuracy": 0.9}, primary_metric="accuracy", primary_score=0.9)
    version, _ = registry_services.model_version_promote(run=run, by=owner, model_name=SECRET_MODEL, alias="champion")
    return version.model


def _client(role: str, world) -> Client:
    client = Client()
    if role != "anonymous":
        client.force_login(world[role])
    return client


def _url(route: str, world) -> str:
    values = {"path": "model.txt", "name": "sklearn-mlp", "number": 1, "alias": "champion"}
    scope = ROUTES[route].scope
    if scope in OBJECT_SCOPES:
        values["pk"] = world[scope].pk
    if scope == "model":
        values["name"] = world["model"].name
    return "/" + route.format(**values)


def _send(client: Client, url: str, req: Req):
    headers = {"HX-Request": "true"} if req.htmx else {}
    if req.method == "get":
        return client.get(url, headers=headers)
    if req.method == "delete":
        return client.delete(url, headers=headers)
    if req.method == "put":
        return client.put(url, json.dumps(req.data or {}), content_type="application/json", headers=headers)
    if req.json:
        return client.post(url, req.data or {}, content_type="application/json", headers=headers)
    return client.post(url, req.data or {}, headers=headers)


def _body(response) -> str:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode(errors="replace")
    return response.content.decode(errors="replace")


def _secrets(scope: str | None) -> tuple[str, ...]:
    return LIST_SECRETS.get(scope or "", ())


def _is_outsider(role: str, scope: str | None) -> bool:
    """Someone who must not see the world's object: another user, or staff where the scope is personal."""
    return role == "other" or role == "staff" and scope in PERSONAL_SCOPES


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", list(ROUTES))
def test_route_permissions(route, role, world):
    spec = ROUTES[route]
    for req in spec.requests:
        client = _client(role, world)
        url = _url(route, world)
        response = _send(client, url, req)
        what = f"{req.method.upper()} {url}{' (htmx)' if req.htmx else ''} as {role}"
        body = _body(response)

        if role == "anonymous" and spec.access != OPEN:
            if spec.access == API:
                assert response.status_code in (401, 403), what
            else:
                assert response.status_code == 302, what
                assert response["Location"].startswith("/accounts/login/"), what
            for secret in ALL_SECRETS:
                assert secret not in body, what
            continue

        if _is_outsider(role, spec.scope) and spec.scope in OBJECT_SCOPES:
            assert response.status_code == 404, what
            continue

        assert response.status_code in req.ok, f"{what}: {response.status_code} {body[:300]}"
        if req.method == "get":
            for secret in _secrets(spec.scope):
                if _is_outsider(role, spec.scope):
                    assert secret not in body, f"{what} shows another user's {secret}"
                else:
                    assert secret in body, f"{what} does not show {secret}"


@pytest.mark.parametrize("url", ["/api/runs/{run}.json", "/api/runs/{run}/metrics.json", "/api/tuning/jobs.json"])
def test_format_suffix_urls_are_not_found(url, world):
    client = _client("owner", world)
    assert client.get(url.format(run=world["run"].pk)).status_code == 404


# --- the admin: staff only ---------------------------------------------------------------------


def _admin_urls(world) -> list[str]:
    urls = []
    for route in all_routes():
        if not route.startswith(ADMIN_PREFIX) or route in ADMIN_OPEN or route == "admin/{url}":
            continue
        values = {}
        if "{content_type_id}" in route:
            from django.contrib.contenttypes.models import ContentType

            values["content_type_id"] = ContentType.objects.get_for_model(world["run"]).pk
            values["object_id"] = world["run"].pk
        elif "{object_id}" in route or "{id}" in route:
            app_label, model_name = route.split("/")[1:3]
            model = apps.get_model(app_label, model_name)
            obj = model.objects.order_by("pk").first() if model is not get_user_model() else world["owner"]
            values["object_id"] = values["id"] = obj.pk if obj is not None else 1
        if "{app_label}" in route:
            values["app_label"] = "tuning"
        urls.append("/" + route.format(**values))
    urls.append("/admin/no-such-page/")  # the catch-all
    return urls


@pytest.mark.parametrize("role", ROLES)
def test_admin_is_staff_only(role, world):
    urls = _admin_urls(world)
    assert len(urls) > 40
    for url in urls:
        response = _client(role, world).get(url)
        if role == "staff":
            # 403 where the admin forbids an action to everyone (adding runs, deleting running jobs)
            # or the autocomplete lacks its query parameters; lists and the index must open.
            listing = url == "/admin/" or url.count("/") == 4 and not url.endswith(("/add/", "/autocomplete/"))
            allowed = (200,) if listing else (200, 302, 403, 404)
            assert response.status_code in allowed, f"{url}: {response.status_code}"
            if response.status_code == 302:
                assert "/admin/login/" not in response["Location"], url
        else:
            assert response.status_code in (302, 404), f"{url} as {role}: {response.status_code}"
            if response.status_code == 302:
                assert response["Location"].startswith("/admin/login/"), f"{url} as {role}"
            for secret in ALL_SECRETS:
                assert secret not in _body(response), f"{url} as {role}"


@pytest.mark.parametrize("url", ["/admin/login/"])
def test_admin_login_is_open(url, client):
    assert client.get(url).status_code == 200


def test_token_authenticated_other_user_gets_404(world):
    """The same object checks apply to token-authenticated scripts."""
    token = ApiTokenFactory(user=world["other"])
    client = Client(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get(f"/api/tuning/jobs/{world['job'].pk}/").status_code == 404
    assert client.get(f"/api/runs/{world['run'].pk}/").status_code == 404
    assert SECRET_JOB not in client.get("/api/tuning/jobs/").content.decode()
    assert client.post(f"/api/tuning/jobs/{world['job'].pk}/cancel/").status_code == 404
