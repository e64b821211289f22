from django.urls import path

from cluster import views

urlpatterns = [
    path("metrics", views.metrics, name="sim_metrics"),
    path("nodes/<str:node>/metrics", views.node_metrics, name="sim_node_metrics"),
]
