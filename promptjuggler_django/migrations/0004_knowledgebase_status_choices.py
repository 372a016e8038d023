"""The known knowledge-base statuses as the status field's choices (labels, the admin filter)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("promptjuggler_django", "0003_scale_indexes"),
    ]

    operations = [
        migrations.AlterField(
            model_name="knowledgebase",
            name="status",
            field=models.CharField(
                blank=True,
                choices=[("pending", "Pending"), ("ready", "Ready"), ("failed", "Failed")],
                max_length=32,
                verbose_name="status",
            ),
        ),
    ]
