"""A REST API for the signed-in user's documents (Django REST framework, the ``rest`` extra).

``POST`` uploads one or several files (multipart, field ``files``), ``GET`` lists or retrieves,
``DELETE`` deletes; there is no update (replace a document by deleting and uploading). Only the
requesting user's documents are visible. Like the forms, the API only creates and deletes rows:
the receivers push and remove the remote copies after commit. Route it with
``path("api/", include("promptjuggler_django.rest_urls"))`` or register the viewset yourself.
"""

from __future__ import annotations

from typing import Any

try:
    from rest_framework import mixins, serializers, status, viewsets
    from rest_framework.pagination import PageNumberPagination
    from rest_framework.parsers import MultiPartParser
    from rest_framework.permissions import IsAuthenticated
    from rest_framework.request import Request
    from rest_framework.response import Response
    from rest_framework.schemas.openapi import AutoSchema
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "promptjuggler_django.rest needs Django REST framework: "
        'pip install "promptjuggler-django[rest]"'
    ) from exc

from django.db.models import QuerySet

from .display import document_phase
from .forms import create_documents, default_knowledge_base, validate_document_file
from .models import KnowledgeBase, KnowledgeDocument

__all__ = [
    "DocumentPagination",
    "DocumentUploadSerializer",
    "KnowledgeDocumentSerializer",
    "KnowledgeDocumentViewSet",
]


class KnowledgeDocumentSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """A document as the API shows it. ``status`` is the one-word phase the pages show."""

    knowledge_base: serializers.SlugRelatedField[KnowledgeBase] = serializers.SlugRelatedField(
        slug_field="slug", read_only=True
    )
    status = serializers.SerializerMethodField(
        help_text="queued, uploading, retrying, checking, upload_failed, processing, ready or "
        "failed."
    )
    status_label = serializers.SerializerMethodField(help_text="The status, in words.")

    class Meta:
        model = KnowledgeDocument
        fields = (
            "id",
            "knowledge_base",
            "file_name",
            "file_size",
            "content_type",
            "status",
            "status_label",
            "sync_state",
            "remote_id",
            "remote_status",
            "chunk_count",
            "last_error",
            "created_at",
            "updated_at",
        )
        read_only_fields = fields

    def get_status(self, obj: KnowledgeDocument) -> str:
        return document_phase(obj).key

    def get_status_label(self, obj: KnowledgeDocument) -> str:
        return str(document_phase(obj).label)


class DocumentUploadSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """Multipart upload: one ``files`` part per file (``files[0]``, ``files[1]``, … work too)."""

    files = serializers.ListField(
        child=serializers.FileField(validators=[validate_document_file]),
        allow_empty=False,
        help_text="One or several files (the same limits as the upload page).",
    )
    knowledge_base: serializers.SlugRelatedField[KnowledgeBase] = serializers.SlugRelatedField(
        slug_field="slug",
        queryset=KnowledgeBase.objects.all(),
        required=False,
        help_text="The knowledge base's slug; DEFAULT_KNOWLEDGE_BASE when left out.",
    )

    def create(self, validated_data: dict[str, Any]) -> list[KnowledgeDocument]:
        knowledge_base = validated_data.get("knowledge_base") or default_knowledge_base()
        owner = self.context["request"].user
        return create_documents(knowledge_base, validated_data["files"], owner=owner)


class DocumentPagination(PageNumberPagination):
    page_size = 25
    page_size_query_param = "page_size"
    max_page_size = 100


class _DocumentSchema(AutoSchema):
    """The upload takes :class:`DocumentUploadSerializer` and answers with a list of documents."""

    def get_response_serializer(self, path: str, method: str) -> Any:
        if method == "POST":
            return KnowledgeDocumentSerializer(many=True)
        return super().get_response_serializer(path, method)

    def get_responses(self, path: str, method: str) -> dict[str, Any]:
        responses: dict[str, Any] = super().get_responses(path, method)
        if method == "POST" and "201" in responses:
            item = self.get_reference(KnowledgeDocumentSerializer())
            for media in responses["201"].get("content", {}).values():
                media["schema"] = {"type": "array", "items": item}
        return responses


class KnowledgeDocumentViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,  # type: ignore[type-arg]
):
    """Upload, list, retrieve and delete the requesting user's documents."""

    serializer_class = KnowledgeDocumentSerializer
    permission_classes = [IsAuthenticated]
    pagination_class = DocumentPagination
    parser_classes = [MultiPartParser]
    schema = _DocumentSchema(tags=["documents"], operation_id_base="KnowledgeDocument")

    def get_queryset(self) -> QuerySet[KnowledgeDocument]:
        """The requesting user's documents. Override to widen (e.g. for staff)."""
        if getattr(self, "swagger_fake_view", False):  # schema generators without a user
            return KnowledgeDocument.objects.none()
        return KnowledgeDocument.objects.owned_by(self.request.user).select_related(
            "knowledge_base"
        )

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:  # type: ignore[type-arg]
        if self.action == "create":
            return DocumentUploadSerializer
        return KnowledgeDocumentSerializer

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        upload = self.get_serializer(data=request.data)
        upload.is_valid(raise_exception=True)
        created = upload.save()
        # Re-read: with an immediate task backend the push already ran on commit.
        fresh = self.get_queryset().in_bulk([d.pk for d in created])
        documents = [fresh.get(d.pk, d) for d in created]
        output = KnowledgeDocumentSerializer(
            documents, many=True, context=self.get_serializer_context()
        )
        return Response(output.data, status=status.HTTP_201_CREATED)
