from django.urls import path

from guard import views

app_name = "guard"
urlpatterns = [
    path("", views.model_list, name="models"),
    path("rollback-to-embedded", views.rollback_to_embedded, name="rollback_embedded"),
    path("<slug:name>/", views.model_detail, name="model"),
    path("<slug:name>/promote", views.promote, name="promote"),
    path("<slug:name>/rollback", views.rollback, name="rollback"),
]
