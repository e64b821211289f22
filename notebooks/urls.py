from django.urls import path

from notebooks import proxy, views

urlpatterns = [
    path("", views.notebook_list, name="notebook_list"),
    path("new/", views.notebook_new, name="notebook_new"),
    path("<int:notebook_id>/", views.notebook_detail, name="notebook_detail"),
    path("<int:notebook_id>/stop/", views.notebook_stop, name="notebook_stop"),
    path("<int:notebook_id>/proxy/", proxy.http_proxy, name="notebook_proxy_root"),
    path("<int:notebook_id>/proxy/<path:path>", proxy.http_proxy, name="notebook_proxy"),
]
