"""A REST API for the signed-in user's documents (Django REST framework, the ``rest`` extra).

``POST`` uploads one or several files (multipart, field ``files``), ``GET`` lists or retrieves,
``DELETE`` deletes; there is no update (replace a document by deleting and uploading). Only the
requesting user's documents are visible. Like the forms, the API only creates and deletes rows:
the receivers push and remove the remote copies after commit. Route it with
``path("api/", include("promptjuggler_django.rest_urls"))`` or register the viewset yourself.

``runs/`` asks the knowledge base: ``POST`` a question (optionally following up one of the user's
runs) starts ``ASK_PROMPT`` — never a prompt the request names — and ``GET`` lists or retrieves
the user's runs of it with their answer, sources, cost and tokens (see :mod:`.asking`).
"""

from __future__ import annotations

from typing import Any

try:
    from rest_framework import exceptions, mixins, serializers, status, viewsets
    from rest_framework.pagination import PageNumberPagination
    from rest_framework.parsers import JSONParser, MultiPartParser
    from rest_framework.permissions import AllowAny, IsAuthenticated
    from rest_framework.request import Request
    from rest_framework.response import Response
    from rest_framework.schemas.openapi import AutoSchema
    from rest_framework.schemas.utils import is_list_view
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "promptjuggler_django.rest needs Django REST framework: "
        'pip install "promptjuggler-django[rest]"'
    ) from exc

from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest

from .asking import (
    MAX_QUESTION_LENGTH,
    AskConfig,
    AskRefused,
    ask,
    ask_config,
    ask_runs,
    clean_question,
    question_of,
    run_message,
    run_phase,
    run_sources,
)
from .display import document_phase
from .forms import create_documents, validate_document_file
from .models import KnowledgeBase, KnowledgeDocument, Run
from .uploadhandlers import UploadSizeLimitHandler, upload_refusal
from .uploadtargets import NOT_ALLOWED, fallback_knowledge_base, uploadable_knowledge_bases

__all__ = [
    "AskSerializer",
    "DocumentPagination",
    "DocumentUploadSerializer",
    "KnowledgeDocumentSerializer",
    "KnowledgeDocumentViewSet",
    "RunSerializer",
    "RunViewSet",
    "UploadableKnowledgeBaseField",
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


class UploadableKnowledgeBaseField(serializers.SlugRelatedField):  # type: ignore[type-arg]
    """A knowledge base's slug, among those the requesting user may upload into.

    A slug outside the upload rule and one that does not exist get the same answer.
    """

    default_error_messages = {"does_not_exist": NOT_ALLOWED, "invalid": NOT_ALLOWED}

    def get_queryset(self) -> QuerySet[KnowledgeBase]:
        request = self.context.get("request")
        assert request is not None, (
            "UploadableKnowledgeBaseField needs the request in the serializer's context: the "
            "upload rule decides per user."
        )
        return uploadable_knowledge_bases(request)


class DocumentUploadSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """Multipart upload: one ``files`` part per file (``files[0]``, ``files[1]``, … work too)."""

    files = serializers.ListField(
        child=serializers.FileField(validators=[validate_document_file]),
        allow_empty=False,
        help_text="One or several files (the same limits as the upload page).",
    )
    knowledge_base = UploadableKnowledgeBaseField(
        slug_field="slug",
        required=False,
        help_text="The slug of a knowledge base the user may upload into; when left out, "
        "DEFAULT_KNOWLEDGE_BASE (or the only one the user may upload into).",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("knowledge_base") is None:
            field = self.fields["knowledge_base"]
            assert isinstance(field, UploadableKnowledgeBaseField)
            fallback = fallback_knowledge_base(field.get_queryset())
            if fallback is None:
                raise serializers.ValidationError(
                    {"knowledge_base": [field.error_messages["required"]]}
                )
            attrs["knowledge_base"] = fallback
        return attrs

    def create(self, validated_data: dict[str, Any]) -> list[KnowledgeDocument]:
        owner = self.context["request"].user
        return create_documents(
            validated_data["knowledge_base"], validated_data["files"], owner=owner
        )


class DocumentPagination(PageNumberPagination):
    page_size = 25
    page_size_query_param = "page_size"
    max_page_size = 100


#: ``{"detail": "..."}``: how DRF answers a refused request (authentication, permission, not
#: found, a body it cannot parse or take).
ERROR_DETAIL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
#: A serializer's validation errors: each field (or ``non_field_errors``) with its messages, or,
#: for a list such as ``files``, the failing items' indexes with theirs.
VALIDATION_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": {
        "anyOf": [
            {"type": "array", "items": {"type": "string"}},
            {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "string"}},
            },
        ]
    },
    "example": {"files": {"1": ["“tool.exe” is not a supported file type. …"]}},
}
_ERROR_DETAIL_REF = {"$ref": "#/components/schemas/ErrorDetail"}
_VALIDATION_ERROR_REF = {"$ref": "#/components/schemas/ValidationError"}


class _DocumentSchema(AutoSchema):
    """The API's OpenAPI schema: DRF's, plus the error answers DRF's generator leaves out.

    Every operation documents the refusals it can answer with, in the body DRF sends: 400 (the
    validation errors, or ``{"detail"}`` for a body that does not parse) and 415 for one that
    takes a body, 401 and 403 behind a permission, 404 for one that names an object or a page.
    The upload takes :class:`DocumentUploadSerializer` and answers with a list of documents.
    """

    #: ``POST`` answers with a list of the created objects (the upload), not with one.
    creates_many = True

    def get_path_parameters(self, path: str, method: str) -> list[dict[str, Any]]:
        """DRF types every path parameter a string; an integer primary key is an integer."""
        parameters: list[dict[str, Any]] = super().get_path_parameters(path, method)
        get_serializer_class = getattr(self.view, "get_serializer_class", None)
        meta = getattr(get_serializer_class(), "Meta", None) if get_serializer_class else None
        model = getattr(meta, "model", None)
        if model is None:
            return parameters
        for parameter in parameters:
            name = parameter["name"]
            field = model._meta.pk if name in ("id", "pk") else None
            if isinstance(field, models.IntegerField):  # AutoField, BigAutoField among them
                parameter["schema"] = {"type": "integer"}
        return parameters

    def map_field(self, field: Any) -> dict[str, Any]:
        """DRF leaves out that a list field with ``allow_empty=False`` needs one item."""
        schema: dict[str, Any] = super().map_field(field)
        if isinstance(field, serializers.ListField) and not field.allow_empty:
            schema.setdefault("minItems", 1)
        return schema

    def get_components(self, path: str, method: str) -> dict[str, Any]:
        components: dict[str, Any] = super().get_components(path, method)
        components["ErrorDetail"] = ERROR_DETAIL_SCHEMA
        components["ValidationError"] = VALIDATION_ERROR_SCHEMA
        return components

    def get_response_serializer(self, path: str, method: str) -> Any:
        if method == "POST" and self.creates_many:
            return KnowledgeDocumentSerializer(many=True)
        return super().get_response_serializer(path, method)

    def get_responses(self, path: str, method: str) -> dict[str, Any]:
        responses: dict[str, Any] = super().get_responses(path, method)
        if method == "POST" and "201" in responses and self.creates_many:
            item = self.get_reference(KnowledgeDocumentSerializer())
            for media in responses["201"].get("content", {}).values():
                media["schema"] = {"type": "array", "items": item}
        media_types = self.map_renderers(path, method)
        for code, (description, schema) in self._error_responses(path, method).items():
            content = {media_type: {"schema": schema} for media_type in media_types}
            responses.setdefault(code, {"description": description, "content": content})
        return responses

    def _error_responses(self, path: str, method: str) -> dict[str, tuple[str, Any]]:
        """Status code → (description, body schema) of the refusals this operation can answer."""
        errors: dict[str, tuple[str, Any]] = {}
        if method in ("POST", "PUT", "PATCH"):
            errors["400"] = (
                "Invalid input: the validation errors per field (per file index for ``files``), "
                "or ``detail`` for a body that does not parse.",
                {"anyOf": [_VALIDATION_ERROR_REF, _ERROR_DETAIL_REF]},
            )
            errors["415"] = (
                "The body is not in a media type the operation takes.",
                _ERROR_DETAIL_REF,
            )
        if not all(isinstance(p, AllowAny) for p in self.view.get_permissions()):
            errors["401"] = (
                "Not authenticated, with an authentication scheme that asks for credentials "
                "(``WWW-Authenticate``).",
                _ERROR_DETAIL_REF,
            )
            errors["403"] = (
                "Not authenticated (session authentication) or not allowed.",
                _ERROR_DETAIL_REF,
            )
        paginated = is_list_view(path, method, self.view) and self.get_paginator() is not None
        if "{" in path or paginated:  # a path parameter (``{id}``) names an object
            errors["404"] = (
                "Not found: no such object among the requesting user's, or no such page.",
                _ERROR_DETAIL_REF,
            )
        return dict(sorted(errors.items()))


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
    # Any one path segment reaches the API (the router's default also refuses dots), so a
    # malformed id is the API's JSON 404, not the site's 404 page.
    lookup_value_regex = "[^/]+"

    def initialize_request(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Request:
        # Before anything reads the body (session authentication's CSRF check does).
        UploadSizeLimitHandler.install(request)
        return super().initialize_request(request, *args, **kwargs)

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
        refusal = upload_refusal(request)
        if refusal is not None:  # stopped at a file over MAX_UPLOAD_SIZE: refuse it all
            raise serializers.ValidationError({"files": refusal.messages})
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


class SourcesField(serializers.ListField):
    """The titles of the documents an answer cites (from the run's transcript)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(child=serializers.CharField(), read_only=True, **kwargs)

    def get_attribute(self, instance: Run) -> list[str]:
        return run_sources(instance) if run_phase(instance).key == "answered" else []


class RunSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """A question of the user's and its answer. ``status`` is the phase the Ask page shows."""

    question = serializers.SerializerMethodField(help_text="The question asked.")
    status = serializers.SerializerMethodField(
        help_text="sending, waiting, answered, no_answer, not_sent or checking."
    )
    status_label = serializers.SerializerMethodField(help_text="The status, in words.")
    message = serializers.SerializerMethodField(
        help_text="What the status means for the user, in words; empty once answered."
    )
    sources = SourcesField(help_text="The titles of the documents the answer cites.")
    tokens = serializers.IntegerField(
        source="total_tokens", read_only=True, allow_null=True, help_text="Tokens used in all."
    )

    class Meta:
        model = Run
        fields = (
            "id",
            "question",
            "status",
            "status_label",
            "message",
            "output",
            "sources",
            "thread",
            "remote_status",
            "cost",
            "tokens",
            "created_at",
            "finished_at",
        )
        read_only_fields = fields

    def get_question(self, obj: Run) -> str:
        return question_of(obj)

    def get_status(self, obj: Run) -> str:
        return run_phase(obj).key

    def get_status_label(self, obj: Run) -> str:
        return str(run_phase(obj).label)

    def get_message(self, obj: Run) -> str:
        return run_message(obj)


class AskSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """A question for ``ASK_PROMPT``; ``previous`` continues the thread of one of the user's
    runs (a follow-up)."""

    question = serializers.CharField(
        max_length=MAX_QUESTION_LENGTH,
        trim_whitespace=False,
        help_text="The question, as the user typed it.",
    )
    previous = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        help_text="The id of one of the user's runs whose conversation this question continues.",
    )

    def validate_question(self, value: str) -> str:
        return clean_question(value)

    def create(self, validated_data: dict[str, Any]) -> Run:
        user = self.context["request"].user
        try:
            return ask(
                user,
                validated_data["question"],
                previous=validated_data.get("previous"),
                config=self.context.get("ask_config"),
            )
        except AskRefused as refusal:
            if refusal.code == "busy":
                raise QuestionWaiting(str(refusal)) from None
            if refusal.code in ("unknown_previous", "not_started"):
                raise serializers.ValidationError({"previous": [str(refusal)]}) from None
            raise exceptions.NotFound(str(refusal)) from None


class QuestionWaiting(exceptions.APIException):
    """429: the user's previous question has no answer yet (one question at a time)."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_detail = "Your previous question is still waiting for its answer."
    default_code = "question_waiting"


class _RunSchema(_DocumentSchema):
    """The runs' schema: ``POST`` takes :class:`AskSerializer` and answers with one run; it also
    answers 429 (a question still waits) and 404 (asking is off)."""

    creates_many = False

    def get_response_serializer(self, path: str, method: str) -> Any:
        if method == "POST":
            return RunSerializer()
        return super().get_response_serializer(path, method)

    def _error_responses(self, path: str, method: str) -> dict[str, tuple[str, Any]]:
        errors = super()._error_responses(path, method)
        errors["404"] = (
            "Not found: asking is off (no ``ASK_PROMPT``), no such run among the requesting "
            "user's, or no such page.",
            _ERROR_DETAIL_REF,
        )
        if method == "POST":
            errors["429"] = (
                "The user's previous question is still waiting for its answer: one at a time.",
                _ERROR_DETAIL_REF,
            )
        return dict(sorted(errors.items()))


class RunViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,  # type: ignore[type-arg]
):
    """Ask a question (start ``ASK_PROMPT``), list and retrieve the requesting user's runs of it.

    Without ``ASK_PROMPT`` every request is a 404.
    """

    serializer_class = RunSerializer
    permission_classes = [IsAuthenticated]
    pagination_class = DocumentPagination
    parser_classes = [JSONParser]
    schema = _RunSchema(tags=["runs"], operation_id_base="Run")
    lookup_value_regex = "[^/]+"

    def get_ask_config(self) -> AskConfig | None:
        """The prompt to start, ``ASK_PROMPT`` by default (``None``: asking is off, a 404).
        Override to choose one per user; never take it from the request."""
        return ask_config()

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # authentication and permissions first
        if self.get_ask_config() is None:
            raise exceptions.NotFound("Asking is not set up on this site.")

    def get_queryset(self) -> QuerySet[Run]:
        """The requesting user's runs of ``ASK_PROMPT``, newest first. Override to widen."""
        if getattr(self, "swagger_fake_view", False):
            return Run.objects.none()
        return ask_runs(self.request.user, self.get_ask_config())

    def get_serializer_context(self) -> dict[str, Any]:
        context = dict(super().get_serializer_context())
        context["ask_config"] = self.get_ask_config()
        return context

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:  # type: ignore[type-arg]
        if self.action == "create":
            return AskSerializer
        return RunSerializer

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        question = self.get_serializer(data=request.data)
        question.is_valid(raise_exception=True)
        run = question.save()
        # Re-read: with an immediate task backend the run was already sent on commit.
        run = self.get_queryset().filter(pk=run.pk).first() or run
        output = RunSerializer(run, context=self.get_serializer_context())
        return Response(output.data, status=status.HTTP_201_CREATED)
