"""``manage.py promptjuggler_sync``: finish every outstanding sync job, then report.

Meant for cron (every few minutes) as well as by hand. It is safe while task workers run:
rows they hold are skipped (row locks with ``SKIP LOCKED`` where the database has them, and
upload leases), and every step is idempotent. Exits with status 1 only when work needs a
person (documents failed or in review, runs in review), so cron mail or a monitoring wrapper
notices; work that retries by itself (documents retrying, remote deletions waiting) is
reported, not fatal.
``--retry-now`` cuts those backoffs short after an outage.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...models import KnowledgeBase
from ...runs import run_runs
from ...sync import run_sync
from ..arguments import non_empty


class Command(BaseCommand):
    help = (
        "Push due documents, delete tombstoned remote documents, refresh statuses with one GET "
        "per knowledge base, and reconcile local rows with PromptJuggler; send due runs and "
        "poll runs whose webhook is overdue."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Read PromptJuggler and report what would be done; change nothing.",
        )
        parser.add_argument(
            "--knowledge-base",
            metavar="SLUG",
            # An unset shell variable ("$KB") must not widen the run to every knowledge base.
            type=non_empty("name a knowledge base, or leave the option out to sync them all."),
            help="Only this knowledge base (its documents, tombstones and reconcile).",
        )
        parser.add_argument(
            "--delete-orphans",
            action="store_true",
            help="Delete remote documents that no local row knows (by default only reported).",
        )
        parser.add_argument(
            "--retry-now",
            action="store_true",
            help="Retry now what waits for its backoff (documents retrying, remote deletions "
            "that failed), e.g. after an outage; attempts still count. Off by default.",
        )
        parser.add_argument(
            "--no-progress",
            action="store_true",
            help="No progress line, even on a terminal.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        kb = None
        slug = options.get("knowledge_base")
        if slug is not None:
            try:
                kb = KnowledgeBase.objects.get(slug=slug)
            except KnowledgeBase.DoesNotExist:
                raise CommandError(f"No knowledge base with slug {slug!r}.") from None
        show_progress = not options["no_progress"] and self.stdout.isatty()
        progress = _ProgressLine(self.stdout) if show_progress else None
        summary = run_sync(
            dry_run=options["dry_run"],
            knowledge_base=kb,
            delete_orphans=options["delete_orphans"],
            retry_now=options["retry_now"],
            progress=progress,
        )
        if progress is not None:
            progress.finish()
        for line in summary.lines():
            self.stdout.write(line)
        failing = summary.failing
        if kb is None:  # runs belong to no knowledge base: a run for one leaves them alone
            runs_summary = run_runs(dry_run=options["dry_run"])
            for line in runs_summary.lines():
                self.stdout.write(line)
            failing += runs_summary.failing
        if failing:
            raise CommandError(f"{failing} item(s) left failing that need a person.", returncode=1)


class _ProgressLine:
    """One self-overwriting status line (only used when stdout is a terminal)."""

    WIDTH = 30

    def __init__(self, stdout: Any) -> None:
        self._out = stdout
        self._drawn = False

    def __call__(self, step: str, done: int, total: int | None) -> None:
        if total:
            filled = min(self.WIDTH, self.WIDTH * done // total)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            text = f"\r{step:<10} [{bar}] {done}/{total}"
        else:
            text = f"\r{step:<10} {done}"
        self._out.write(text.ljust(60), ending="")
        self._out.flush()
        self._drawn = True

    def finish(self) -> None:
        if self._drawn:
            self._out.write("")
