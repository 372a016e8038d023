"""pytest fixtures for projects that use promptjuggler_django (registered as a pytest plugin)."""
