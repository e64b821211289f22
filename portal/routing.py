from django.urls import path

from jobs.consumers import JobConsumer
from portal.consumers import GridConsumer

websocket_urlpatterns = [
    path("ws/grid/", GridConsumer.as_asgi()),
    path("ws/jobs/<int:job_id>/", JobConsumer.as_asgi()),
]
