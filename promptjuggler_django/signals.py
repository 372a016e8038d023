"""The app's public signals. All are sent after the transaction that caused them commits.

Receivers get ``sender`` (the model class, or ``None`` for run events) and the keyword
arguments documented on each signal. Connect with ``dispatch_uid`` if your module may be
imported twice.
"""

from typing import Any

from django.db import transaction
from django.dispatch import Signal

#: A document was accepted by PromptJuggler.
#: Arguments: ``document`` (KnowledgeDocument), ``remote_document`` (client.RemoteDocument).
upload_succeeded = Signal()

#: A push failed for good (a definite 4xx, or too many attempts).
#: Arguments: ``document``, ``error`` (str), ``status_code`` (int or None).
upload_failed = Signal()

#: A remote document was deleted (PromptJuggler answered 204, or 404 = already gone).
#: Arguments: ``remote_id`` (UUID), ``knowledge_base`` (KnowledgeBase or None).
remote_deleted = Signal()

#: A document's remote status moved forward.
#: Arguments: ``document``, ``old_status`` (str), ``new_status`` (str),
#: ``delivery`` (WebhookDelivery, or None when learned by polling).
document_status_changed = Signal()

#: A knowledge base's remote status or counts changed.
#: Arguments: ``knowledge_base``, ``old_status``, ``new_status``, ``delivery`` (or None).
knowledge_base_status_changed = Signal()

#: A ``promptrun.finished`` or ``workflowrun.finished`` webhook arrived for a run the app did
#: not start (or whose start answer was not stored yet); runs the app started are followed
#: through ``run_status_changed`` and ``run_result_stored``.
#: Arguments: ``event_type`` (str), ``run_id`` (str), ``status`` (str), ``delivery``.
run_finished = Signal()

#: The remote status of a run the app started moved forward (a webhook or a poll).
#: Arguments: ``run`` (Run), ``old_status``, ``new_status``, ``delivery`` (or None).
run_status_changed = Signal()

#: A finished run's result (output, outputs, usage, cost) was fetched and stored on its row.
#: Arguments: ``run`` (Run, as stored).
run_result_stored = Signal()


def send(signal: Signal, sender: Any, **kwargs: Any) -> None:
    """Send ``signal`` now, to every receiver, for state that is already committed.

    The one way the app sends its signals. Receivers are isolated (``send_robust``): one that
    raises is logged by Django to ``django.dispatch`` and neither stops the others nor fails
    the committed work or the worker.
    """
    signal.send_robust(sender=sender, **kwargs)


def send_on_commit(signal: Signal, sender: Any, *, using: str | None = None, **kwargs: Any) -> None:
    """:func:`send` once the current transaction on ``using`` commits; nothing if it rolls back.

    ``using`` is the database alias of the transaction (the default database when omitted).
    """

    def send_after_commit() -> None:
        send(signal, sender, **kwargs)

    transaction.on_commit(send_after_commit, using=using, robust=True)
