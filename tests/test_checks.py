from promptjuggler_django.checks import check_settings


def ids(messages):
    return [m.id for m in messages]


def test_configured_settings_pass(settings):
    assert check_settings() == []


def test_missing_api_key(settings, monkeypatch):
    monkeypatch.delenv("PROMPTJUGGLER_API_KEY", raising=False)
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "API_KEY": None}
    messages = check_settings()
    assert ids(messages) == ["promptjuggler_django.E001"]
    assert 'PROMPTJUGGLER["API_KEY"]' in messages[0].hint


def test_missing_webhook_secret(settings):
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "WEBHOOK_SECRETS": []}
    messages = check_settings()
    assert ids(messages) == ["promptjuggler_django.E002"]
    assert "WEBHOOK_SECRETS" in messages[0].hint


def test_non_positive_tolerance_is_an_error(settings):
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "WEBHOOK_TOLERANCE": 0}
    assert ids(check_settings()) == ["promptjuggler_django.E004"]


def test_invalid_value_reported_per_key(settings):
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "READ_TIMEOUT": "slow"}
    messages = check_settings()
    assert ids(messages) == ["promptjuggler_django.E003"]
    assert 'PROMPTJUGGLER["READ_TIMEOUT"]' in messages[0].msg


def test_unknown_key_is_a_warning(settings):
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "API_KEYS": "typo"}
    messages = check_settings()
    assert ids(messages) == ["promptjuggler_django.W001"]
    assert "API_KEYS" in messages[0].msg


def test_checks_run_through_django(settings):
    from django.core import checks

    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "WEBHOOK_SECRETS": []}
    # databases=[]: Django 6.1 runs the database checks on every database by default.
    assert "promptjuggler_django.E002" in ids(checks.run_checks(databases=[]))
