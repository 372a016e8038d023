"""``include("promptjuggler_django.rest_urls")``: the REST API (needs the ``rest`` extra).

Routes ``documents/`` (list, upload) and ``documents/<pk>/`` (retrieve, delete), named
``promptjuggler_django_rest:document-list`` and ``promptjuggler_django_rest:document-detail``;
``runs/`` (ask, list) and ``runs/<pk>/`` (retrieve), ``…:run-list`` and ``…:run-detail``.
"""

from rest_framework.routers import SimpleRouter

from .rest import KnowledgeDocumentViewSet, RunViewSet

app_name = "promptjuggler_django_rest"

router = SimpleRouter()
router.register("documents", KnowledgeDocumentViewSet, basename="document")
router.register("runs", RunViewSet, basename="run")

urlpatterns = router.urls
