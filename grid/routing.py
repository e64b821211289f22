from django.urls import path

from grid.consumers import GridConsumer
from jobs.consumers import JobConsumer
from notebooks.proxy import NotebookProxyConsumer

websocket_urlpatterns = [
    path("ws/grid/", GridConsumer.as_asgi()),
    path("ws/jobs/<int:job_id>/", JobConsumer.as_asgi()),
    # A notebook server's own websockets (kernels, terminals, code-server's remote channel), at the paths its pages ask for.
    path("notebooks/<int:notebook_id>/proxy/", NotebookProxyConsumer.as_asgi()),
    path("notebooks/<int:notebook_id>/proxy/<path:rest>", NotebookProxyConsumer.as_asgi()),
]
