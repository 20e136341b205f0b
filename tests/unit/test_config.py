from pathlib import Path

import pytest

from jitgate.config import ConfigError, load_settings


def test_defaults_match_the_documented_ports() -> None:
    settings = load_settings(env={})
    assert settings.api.port == 8009
    assert settings.listeners.postgres.port == 15432
    assert settings.listeners.mysql.port == 13306
    assert settings.listeners.ssh.port == 12222
    assert settings.listeners.http.port == 18888
    assert settings.effective_database_url.startswith("sqlite:///")


def test_yaml_file_then_environment_override(tmp_path: Path) -> None:
    config = tmp_path / "jitgate.yaml"
    config.write_text("api:\n  port: 9100\nlisteners:\n  postgres:\n    port: 6000\n")
    settings = load_settings(
        config,
        env={
            "JITGATE_API__PORT": "9200",
            "JITGATE_DATA_DIR": str(tmp_path / "d"),
            "JITGATE_DATABASE_URL": "postgresql://x@h/db",
        },
    )
    assert settings.api.port == 9200
    assert settings.listeners.postgres.port == 6000
    assert settings.data_dir == tmp_path / "d"
    assert settings.effective_database_url == "postgresql://x@h/db"


def test_toml_file_and_config_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "jitgate.toml"
    config.write_text('log_level = "debug"\n[roles]\napprover = ["dbas", "sre"]\n')
    settings = load_settings(env={"JITGATE_CONFIG": str(config)})
    assert settings.log_level == "debug"
    assert settings.roles.approver == ["dbas", "sre"]


def test_master_key_from_environment_stays_secret() -> None:
    settings = load_settings(env={"JITGATE_MASTER_KEY": "c2VjcmV0"})
    assert settings.master_key is not None
    assert settings.master_key.get_secret_value() == "c2VjcmV0"
    assert "c2VjcmV0" not in repr(settings)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("api:\n  port: eighty\n", "api.port"),
        ("api:\n  prot: 80\n", "api.prot: unknown key"),
        ("listeners:\n  postgres:\n    port: 70000\n", "listeners.postgres.port"),
        ("oidc:\n  issuer: http://x\n  audiences: [a]\n  algorithms: [HS256]\n", "oidc.algorithms"),
        ("log_level: loud\n", "log_level"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("api: [unclosed\n", "not valid yaml"),
    ],
)
def test_invalid_config_names_key_and_problem(tmp_path: Path, text: str, needle: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as excinfo:
        load_settings(config, env={})
    assert needle in str(excinfo.value)


def test_invalid_environment_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"api\.port"):
        load_settings(env={"JITGATE_API__PORT": "not-a-port"})


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match=r"no-such\.yaml"):
        load_settings("/nonexistent/no-such.yaml", env={})


def test_client_variables_are_not_config() -> None:
    settings = load_settings(env={"JITGATE_SERVER": "http://x", "JITGATE_TOKEN": "t"})
    assert settings.api.port == 8009


@pytest.mark.parametrize("listener", ["mysql", "http"])
def test_listeners_not_built_yet_cannot_be_turned_on(listener: str) -> None:
    with pytest.raises(ConfigError, match=rf"listeners\.{listener}.*no such listener yet"):
        load_settings(env={f"JITGATE_LISTENERS__{listener.upper()}__ENABLED": "true"})
