from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class PromptJugglerConfig(AppConfig):
    name = "promptjuggler_django"
    label = "promptjuggler_django"
    verbose_name = _("PromptJuggler")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported once the app registry is ready: they need the models.
        from . import (
            checks,  # noqa: F401  (registers the system checks)
            runs,
            sync,
        )

        sync.connect_receivers()
        runs.connect_receivers()
