import pytest
from django.core.exceptions import ImproperlyConfigured

from promptjuggler_django.conf import SETTINGS, pj_settings


def test_defaults_apply_for_missing_keys(settings):
    settings.PROMPTJUGGLER = {"API_KEY": "k"}
    assert pj_settings.BASE_URL == "https://promptjuggler.com"
    assert pj_settings.WEBHOOK_TOLERANCE == 300
    assert pj_settings.webhook_secrets == []


def test_settings_are_read_lazily(settings):
    settings.PROMPTJUGGLER = {"BASE_URL": "https://one.example"}
    assert pj_settings.BASE_URL == "https://one.example"
    settings.PROMPTJUGGLER = {"BASE_URL": "https://two.example"}
    assert pj_settings.BASE_URL == "https://two.example"


def test_missing_setting_dict_means_defaults(settings):
    del settings.PROMPTJUGGLER
    assert SETTINGS["MAX_RETRIES"].default == pj_settings.MAX_RETRIES


def test_api_key_falls_back_to_environment(settings, monkeypatch):
    settings.PROMPTJUGGLER = {}
    monkeypatch.setenv("PROMPTJUGGLER_API_KEY", "from-env")
    assert pj_settings.API_KEY == "from-env"
    settings.PROMPTJUGGLER = {"API_KEY": "from-settings"}
    assert pj_settings.API_KEY == "from-settings"


def test_single_secret_is_accepted_and_merged(settings):
    settings.PROMPTJUGGLER = {"WEBHOOK_SECRET": "whsec_b", "WEBHOOK_SECRETS": ["whsec_a"]}
    assert pj_settings.webhook_secrets == ["whsec_a", "whsec_b"]
    settings.PROMPTJUGGLER = {"WEBHOOK_SECRET": "whsec_only"}
    assert pj_settings.webhook_secrets == ["whsec_only"]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("WEBHOOK_TOLERANCE", "300", "a number of seconds"),
        ("READ_TIMEOUT", 0, "a positive number"),
        ("MAX_RETRIES", -1, "a non-negative int"),
        ("BATCH_MAX_FILES", True, "a positive int"),
        ("WEBHOOK_SECRETS", "whsec_not_a_list", "a list of non-empty strings"),
        ("WEBHOOK_PROCESSING", "later", "'inline' or 'deferred'"),
        ("BASE_URL", "promptjuggler.com", "an http(s) URL"),
    ],
)
def test_wrong_values_name_the_key_and_expectation(settings, key, value, expected):
    settings.PROMPTJUGGLER = {key: value}
    with pytest.raises(ImproperlyConfigured) as excinfo:
        getattr(pj_settings, key)
    message = str(excinfo.value)
    assert f'settings.PROMPTJUGGLER["{key}"]' in message
    assert expected in message


def test_errors_never_echo_secrets(settings):
    settings.PROMPTJUGGLER = {"WEBHOOK_SECRETS": ["whsec_super_secret", ""]}
    with pytest.raises(ImproperlyConfigured) as excinfo:
        pj_settings.webhook_secrets  # noqa: B018
    assert "whsec_super_secret" not in str(excinfo.value)
    assert "whsec_super_secret" not in repr(pj_settings)


def test_unknown_setting_name_is_an_attribute_error():
    with pytest.raises(AttributeError):
        pj_settings.NOT_A_SETTING  # noqa: B018


def test_non_dict_setting_is_refused(settings):
    settings.PROMPTJUGGLER = ["API_KEY"]
    with pytest.raises(ImproperlyConfigured, match="must be a dict"):
        pj_settings.API_KEY  # noqa: B018
