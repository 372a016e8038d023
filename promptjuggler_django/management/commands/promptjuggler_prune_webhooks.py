"""``manage.py promptjuggler_prune_webhooks``: delete logged webhook deliveries by age.

The log grows with every delivery PromptJuggler makes. Deleting happens in bounded batches, each
in its own short transaction, so pruning a large table neither holds long locks nor builds one
huge statement. A pruned delivery can no longer be replayed or recognised as a duplicate, which
is harmless past the signature tolerance: PromptJuggler's retries of it would be refused as
stale anyway.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from ...conf import pj_settings
from ...models import WebhookDelivery
from ...webhooks import prune_deliveries
from ..arguments import bounded_int

#: The oldest cutoff accepted (a century): beyond it the date arithmetic overflows.
MAX_DAYS = 36500


class Command(BaseCommand):
    help = "Delete webhook deliveries received more than --older-than days ago."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=bounded_int(0, MAX_DAYS, "days"),
            metavar="DAYS",
            help='Age in days (default: settings.PROMPTJUGGLER["WEBHOOK_RETENTION_DAYS"]).',
        )
        parser.add_argument(
            "--batch-size",
            type=bounded_int(1, 100_000, "rows"),
            default=1000,
            help="Rows deleted per statement (default: 1000).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["older_than"]
        if days is None:
            days = pj_settings.WEBHOOK_RETENTION_DAYS
        batch_size = options["batch_size"]
        cutoff = timezone.now() - timedelta(days=days)
        if options["dry_run"]:
            count = WebhookDelivery.objects.filter(received_at__lt=cutoff).count()
            self.stdout.write(f"{count} webhook deliveries older than {days} days.")
            return
        deleted = prune_deliveries(cutoff, batch_size=batch_size)
        self.stdout.write(f"Deleted {deleted} webhook deliveries older than {days} days.")
