from django.contrib import admin
from django.contrib.auth.views import LoginView
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    # The suite has no templates of its own: the admin's login page serves end users too.
    path(
        "accounts/login/",
        LoginView.as_view(
            template_name="admin/login.html", extra_context={"site_header": "Test site"}
        ),
        name="login",
    ),
    path("accounts/", include("django.contrib.auth.urls")),
    path("promptjuggler/", include("promptjuggler_django.urls")),
    path("api/", include("promptjuggler_django.rest_urls")),
]
