"""The model registry's pages, under /models/ (owned by the trainer, which owns the registry's decisions)."""

from django.urls import path

from trainer import registry_views as views

app_name = "registry"
urlpatterns = [
    path("", views.model_list, name="models"),
    path("rollback-to-embedded", views.rollback_to_embedded, name="rollback_embedded"),
    path("<slug:name>/", views.model_detail, name="model"),
    path("<slug:name>/promote", views.promote, name="promote"),
    path("<slug:name>/force", views.force_promote, name="force"),
    path("<slug:name>/rollback", views.rollback, name="rollback"),
    path("<slug:name>/evaluate", views.evaluate_both, name="evaluate"),
]
