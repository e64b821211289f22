"""ASGI entry point: HTTP through Django, websockets through Channels with session or API-token auth."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grid.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up first)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from grid.routing import websocket_urlpatterns  # noqa: E402
from portal.security import SameOriginWebsocket, TokenWebsocket  # noqa: E402

router = URLRouter(websocket_urlpatterns)
application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Browsers come with their session cookie; scripts with `Authorization: Token` (no session).
        "websocket": SameOriginWebsocket(TokenWebsocket(AuthMiddlewareStack(router), router)),
    }
)
