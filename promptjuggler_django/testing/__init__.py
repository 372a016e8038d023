"""Test helpers shipped with the app: the PromptJuggler emulator and signing helpers."""
