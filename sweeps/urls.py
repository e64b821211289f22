from django.urls import path

from sweeps import views

urlpatterns = [
    path("", views.sweep_list, name="sweep_list"),
    path("new/", views.sweep_new, name="sweep_new"),
    path("<int:sweep_id>/", views.sweep_detail, name="sweep_detail"),
    path("<int:sweep_id>/data", views.sweep_data, name="sweep_data"),
    path("<int:sweep_id>/cancel/", views.sweep_cancel, name="sweep_cancel"),
    path("<int:sweep_id>/best-job/", views.sweep_best_job, name="sweep_best_job"),
    path("<int:sweep_id>/katib.yaml", views.sweep_katib, name="sweep_katib"),
]
