from django.urls import path

from . import views

urlpatterns = [
    path("", views.dataset_list, name="dataset_list"),
]
