"""The run mirror: prompt and workflow runs the app starts, their send state and result."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("promptjuggler_django", "0004_knowledgebase_status_choices"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Run",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "kind",
                    models.CharField(
                        choices=[("prompt", "Prompt"), ("workflow", "Workflow")],
                        max_length=16,
                        verbose_name="kind",
                    ),
                ),
                ("slug", models.CharField(max_length=200, verbose_name="slug")),
                (
                    "version",
                    models.CharField(default="__latest__", max_length=100, verbose_name="version"),
                ),
                ("inputs", models.JSONField(blank=True, default=dict, verbose_name="inputs")),
                ("thread", models.UUIDField(blank=True, null=True, verbose_name="thread")),
                ("priority", models.CharField(blank=True, max_length=16, verbose_name="priority")),
                (
                    "environment",
                    models.CharField(blank=True, max_length=200, verbose_name="environment"),
                ),
                ("metadata", models.JSONField(blank=True, default=dict, verbose_name="metadata")),
                ("channel", models.CharField(blank=True, max_length=200, verbose_name="channel")),
                (
                    "remote_id",
                    models.UUIDField(blank=True, null=True, unique=True, verbose_name="remote id"),
                ),
                (
                    "remote_status",
                    models.CharField(blank=True, max_length=32, verbose_name="remote status"),
                ),
                (
                    "status_changed_at",
                    models.DateTimeField(blank=True, null=True, verbose_name="status changed at"),
                ),
                ("output", models.TextField(blank=True, verbose_name="output")),
                ("emitted", models.JSONField(blank=True, default=list, verbose_name="emitted")),
                (
                    "transcript",
                    models.JSONField(blank=True, default=list, verbose_name="transcript"),
                ),
                ("outputs", models.JSONField(blank=True, default=dict, verbose_name="outputs")),
                ("errors", models.JSONField(blank=True, default=list, verbose_name="errors")),
                ("error", models.TextField(blank=True, verbose_name="error")),
                (
                    "token_usage",
                    models.JSONField(blank=True, null=True, verbose_name="token usage"),
                ),
                (
                    "total_tokens",
                    models.PositiveIntegerField(blank=True, null=True, verbose_name="tokens"),
                ),
                (
                    "cost",
                    models.DecimalField(
                        blank=True, decimal_places=8, max_digits=18, null=True, verbose_name="cost"
                    ),
                ),
                (
                    "remote_created_at",
                    models.DateTimeField(blank=True, null=True, verbose_name="remote created at"),
                ),
                (
                    "finished_at",
                    models.DateTimeField(blank=True, null=True, verbose_name="finished at"),
                ),
                (
                    "result_fetched_at",
                    models.DateTimeField(blank=True, null=True, verbose_name="result fetched at"),
                ),
                (
                    "send_state",
                    models.CharField(
                        choices=[
                            ("queued", "Queued"),
                            ("sending", "Sending"),
                            ("started", "Started"),
                            ("failed", "Failed"),
                            ("needs_review", "Needs review"),
                        ],
                        default="queued",
                        max_length=16,
                        verbose_name="send state",
                    ),
                ),
                ("attempts", models.PositiveIntegerField(default=0, verbose_name="attempts")),
                ("last_error", models.TextField(blank=True, verbose_name="last error")),
                (
                    "next_attempt_at",
                    models.DateTimeField(blank=True, null=True, verbose_name="next attempt at"),
                ),
                ("sent_at", models.DateTimeField(blank=True, null=True, verbose_name="sent at")),
                ("created_at", models.DateTimeField(auto_now_add=True, verbose_name="created at")),
                ("updated_at", models.DateTimeField(auto_now=True, verbose_name="updated at")),
                (
                    "owner",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="promptjuggler_runs",
                        to=settings.AUTH_USER_MODEL,
                        verbose_name="owner",
                    ),
                ),
            ],
            options={
                "verbose_name": "run",
                "verbose_name_plural": "runs",
                "ordering": ("-created_at", "-pk"),
                "indexes": [
                    models.Index(
                        fields=["send_state", "next_attempt_at"], name="pj_run_state_next"
                    ),
                    models.Index(
                        fields=["remote_status", "created_at"], name="pj_run_status_created"
                    ),
                    models.Index(fields=["owner", "-created_at"], name="pj_run_owner_created"),
                    models.Index(fields=["thread", "created_at"], name="pj_run_thread_created"),
                    models.Index(fields=["-created_at", "-id"], name="pj_run_created"),
                ],
            },
        ),
    ]
