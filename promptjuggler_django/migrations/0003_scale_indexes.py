"""Indexes for a million rows: the push claim, and the changelists' default orderings."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("promptjuggler_django", "0002_knowledgebase_blocked"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="knowledgedocument",
            index=models.Index(fields=["-created_at", "-id"], name="pj_doc_created"),
        ),
        migrations.AddIndex(
            model_name="knowledgedocument",
            index=models.Index(
                condition=models.Q(("sync_state__in", ["queued", "retrying"])),
                fields=["knowledge_base", "id"],
                name="pj_doc_claim",
            ),
        ),
        # The composite index below serves the age filter too: the single-column one goes.
        migrations.AlterField(
            model_name="webhookdelivery",
            name="received_at",
            field=models.DateTimeField(
                default=django.utils.timezone.now, verbose_name="received at"
            ),
        ),
        migrations.AddIndex(
            model_name="webhookdelivery",
            index=models.Index(fields=["-received_at", "-id"], name="pj_hook_received"),
        ),
    ]
