from django.urls import path

from trainer import views

app_name = "trainer"
urlpatterns = [
    path("", views.job_list, name="list"),
    path("new", views.start_job, name="new"),
    path("<int:pk>/", views.job_detail, name="detail"),
    path("<int:pk>/progress", views.job_progress, name="progress"),
    path("<int:pk>/cancel", views.cancel_job, name="cancel"),
    path("<int:pk>/resume", views.resume_job, name="resume"),
    path("teach/<slug:slug>/", views.teach_policy, name="teach"),
]
