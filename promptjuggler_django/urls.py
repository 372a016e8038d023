"""``include("promptjuggler_django.urls")``: the webhook endpoints and the end-user pages."""

from .views import urlpatterns as document_urlpatterns
from .webhooks import urlpatterns as webhook_urlpatterns

app_name = "promptjuggler_django"

urlpatterns = [*webhook_urlpatterns, *document_urlpatterns]
