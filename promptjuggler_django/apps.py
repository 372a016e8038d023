from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class PromptJugglerConfig(AppConfig):
    name = "promptjuggler_django"
    label = "promptjuggler_django"
    verbose_name = _("PromptJuggler")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)

        try:
            from . import receivers
        except ImportError:  # pragma: no cover - receivers arrive with the sync engine
            return
        receivers.connect()
