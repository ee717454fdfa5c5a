from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from guardsite import views

handler500 = "guardsite.errors.handler500"

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", views.healthz, name="healthz"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("admin/", admin.site.urls),
    path("", include("ops.urls")),
    path("policies/", include("policies.urls")),
    path("", include("moderation.urls")),
    path("models/", include("trainer.registry_urls")),
    path("training/", include("trainer.urls")),
    path("evaluations/", include("evaluation.urls")),
]
