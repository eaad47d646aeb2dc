from django.urls import path

from . import views

urlpatterns = [
    path("", views.job_list, name="job_list"),
    path("jobs/new/", views.job_create, name="job_create"),
    path("jobs/<int:pk>/", views.job_detail, name="job_detail"),
    path("jobs/<int:pk>/charts/", views.job_charts_fragment, name="job_charts"),
    path("jobs/<int:pk>/start/", views.job_action, {"action": "start"}, name="job_start"),
    path("jobs/<int:pk>/cancel/", views.job_action, {"action": "cancel"}, name="job_cancel"),
    path("jobs/<int:pk>/resume/", views.job_action, {"action": "resume"}, name="job_resume"),
    path("jobs/<int:pk>/clone/", views.job_action, {"action": "clone"}, name="job_clone"),
]
