from django.urls import path

from . import views

urlpatterns = [
    path("", views.model_list, name="model_list"),
    path("<int:pk>/", views.model_detail, name="model_detail"),
    path("<int:pk>/aliases/", views.alias_move, name="model_alias_move"),
    path("<int:pk>/versions/<int:number>/", views.version_detail, name="version_detail"),
    path("<int:pk>/versions/<int:number>/download/", views.version_download, name="version_download"),
    path("promote/run/<int:pk>/", views.run_promote, name="run_promote"),
]
