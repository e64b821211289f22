from django.urls import path

from grid.consumers import GridConsumer
from jobs.consumers import JobConsumer

websocket_urlpatterns = [
    path("ws/grid/", GridConsumer.as_asgi()),
    path("ws/jobs/<int:job_id>/", JobConsumer.as_asgi()),
]
