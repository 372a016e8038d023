from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="promptjuggler_django:document_list")),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    # The webhook (promptjuggler/webhook/) and the document pages (promptjuggler/documents/…).
    path("promptjuggler/", include("promptjuggler_django.urls")),
    # The REST API: api/documents/ (list, upload) and api/documents/<id>/ (retrieve, delete).
    path("api/", include("promptjuggler_django.rest_urls")),
]
