from django.urls import path

from artifacts import views

urlpatterns = [
    path("jobs/<int:job_id>/", views.job_files, name="job_artifacts"),
    path("jobs/<int:job_id>/files/<path:path>", views.download, name="artifact_download"),
    path("teams/<slug:slug>/", views.team_artifacts, name="team_artifacts"),
]
