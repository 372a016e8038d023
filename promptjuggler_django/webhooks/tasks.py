"""The task of the deferred processing mode: apply a logged delivery after the view answered."""

from __future__ import annotations

from ..apply import process_delivery
from ..taskqueue import task


@task()
def process_webhook_task(delivery_id: int) -> None:
    """Apply a stored webhook delivery (the deferred processing mode)."""
    process_delivery(delivery_id)
