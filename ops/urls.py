from django.urls import path

from ops import audit_views, views

app_name = "ops"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("audit/", audit_views.audit_page, name="audit"),
    path("audit/export.csv", audit_views.audit_export, {"fmt": "csv"}, name="audit-export-csv"),
    path("audit/export.json", audit_views.audit_export, {"fmt": "json"}, name="audit-export-json"),
]
