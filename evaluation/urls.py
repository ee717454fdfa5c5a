from django.urls import path

from evaluation import views

app_name = "evaluation"
urlpatterns = [
    path("", views.run_list, name="list"),
    path("start/", views.start_run, name="start"),
    path("compare/", views.compare_runs, name="compare"),
    path("<int:pk>/", views.run_detail, name="detail"),
]
