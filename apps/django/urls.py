"""The URLconf: the contract's four paths, and error handlers that answer JSON."""

from django.urls import path

from apps.django import views

urlpatterns = [
    path("items", views.create_item),
    path("items/bulk", views.create_items),
    path("items/each", views.create_items_each),
    path("health", views.health),
]

handler400 = views.bad_request
handler403 = views.permission_denied
handler404 = views.not_found
handler500 = views.server_error
