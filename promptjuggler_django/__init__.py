"""Keep a Django project's uploaded documents in sync with PromptJuggler knowledge bases."""

__version__ = "0.1.0"
