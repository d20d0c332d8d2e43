"""postroom.config: loading, layering, validation, secrets and rendering."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from postroom.config import (
    Config,
    ConfigError,
    DatabaseConfig,
    QueueConfig,
    Secret,
    default_config,
    env_name,
    load_config,
    redact_url,
    render_config,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "config"
SEED_CLIENT = DATA / "seed-client.yaml"
SEED_SERVER = DATA / "seed-server.yaml"


def load_text(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    path = tmp_path / "postroom.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_config(path, env=env or {})


def error_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, env)
    return str(info.value)


# ---- the seed's two examples ------------------------------------------------------------


def test_seed_client_example_loads_unchanged() -> None:
    config = load_config(SEED_CLIENT, env={})
    queue = config.email.queue["default"]
    assert config.source == str(SEED_CLIENT)
    assert config.email.buffer == 250
    assert (queue.engine, queue.host, queue.port, queue.db, queue.name) == (
        "redis",
        "dockerhost",
        6379,
        0,
        "myqueue",
    )
    assert queue.redis_url() == "redis://dockerhost:6379/0"
    assert config.email.server == default_config().email.server


def test_seed_server_example_loads_unchanged() -> None:
    config = load_config(SEED_SERVER, env={})
    server = config.email.server
    assert config.email.queue["default"].name == "what"
    assert config.email.queue["default"].host == "dockerhost"
    assert server.max_fails == 3
    assert server.max_time == timedelta(hours=1)
    assert server.batch == 50
    assert server.database.engine == "sqlite3"
    assert server.database.path == "/Users/mak/Downloads/sql.db"
    assert server.database.sqlalchemy_url() == "sqlite:////Users/mak/Downloads/sql.db"
    assert (server.smtp.host, server.smtp.port) == ("smtp.gmail.com", 567)
    assert server.smtp.auth.username == "abc@def.com"
    assert server.smtp.auth.password.reveal() == "ghi"
    assert server.smtp.auth.host == "smtp.gmail.com"
    assert server.smtp.auth.identity == ""


def test_seed_server_password_is_hidden_everywhere() -> None:
    config = load_config(SEED_SERVER, env={})
    rendered = render_config(config)
    for text in (repr(config), str(config), repr(config.email.server.smtp.auth), rendered):
        assert "ghi" not in text
    assert "password: '********'" in rendered
    assert "max-time: 1h" in rendered


# ---- defaults and the embedded default ----------------------------------------------------


def test_no_file_anywhere_gives_the_embedded_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, env={})
    assert config.source == "embedded default"
    assert config == default_config()
    queue, database = config.email.queue["default"], config.email.server.database
    assert (queue.engine, queue.path) == ("sqlite", "./.postroom/queue.db")
    assert (database.engine, database.path) == ("sqlite3", "./.postroom/postroom.db")
    assert database.sqlalchemy_url() == "sqlite:///./.postroom/postroom.db"
    assert list(tmp_path.iterdir()) == []  # loading creates nothing on disk


def test_defaults_match_the_documented_values() -> None:
    email = default_config().email
    server, smtp = email.server, email.server.smtp
    assert (email.buffer, email.enqueue_timeout, email.flush_timeout) == (
        250,
        timedelta(seconds=5),
        timedelta(seconds=10),
    )
    assert (server.max_fails, server.max_time, server.batch, server.lease, server.heartbeat) == (
        3,
        timedelta(hours=1),
        50,
        timedelta(minutes=1),
        timedelta(seconds=2),
    )
    assert (server.retry.initial, server.retry.max) == (
        timedelta(seconds=30),
        timedelta(minutes=30),
    )
    assert (server.retry.multiplier, server.retry.jitter) == (2.0, 0.2)
    assert (smtp.host, smtp.port, smtp.tls, smtp.verify, smtp.connections) == (
        "localhost",
        25,
        "auto",
        True,
        16,
    )
    assert smtp.data_timeout == timedelta(minutes=10)
    assert server.dispatcher_id is None and smtp.helo is None
    assert not smtp.auth.password


def test_empty_file_means_all_defaults(tmp_path: Path) -> None:
    assert load_text(tmp_path, "") == default_config()


def test_null_section_means_its_defaults(tmp_path: Path) -> None:
    config = load_text(tmp_path, "email:\n  queue:\n  server:\n    smtp:\n")
    assert config == default_config()


def test_configuration_is_immutable() -> None:
    config = default_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.email.buffer = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.email.queue["other"] = QueueConfig()  # type: ignore[index]


def test_configuration_pickles_for_child_processes() -> None:
    config = load_config(SEED_SERVER, env={})
    copy = pickle.loads(pickle.dumps(config))
    assert copy == config and copy.source == config.source
    assert copy.email.server.smtp.auth.password.reveal() == "ghi"


# ---- lookup order -------------------------------------------------------------------------


def test_local_postroom_yaml_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "postroom.yaml").write_text("email:\n  buffer: 7\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(env={})
    assert config.email.buffer == 7
    assert config.source == str(tmp_path / "postroom.yaml")


def test_postroom_config_variable_beats_local_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "postroom.yaml").write_text("email:\n  buffer: 7\n")
    named = tmp_path / "other.yaml"
    named.write_text("email:\n  buffer: 8\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(env={"POSTROOM_CONFIG": str(named)})
    assert config.email.buffer == 8
    assert config.source == f"$POSTROOM_CONFIG={named}"


def test_explicit_path_beats_postroom_config_variable(tmp_path: Path) -> None:
    named, explicit = tmp_path / "named.yaml", tmp_path / "explicit.yaml"
    named.write_text("email:\n  buffer: 8\n")
    explicit.write_text("email:\n  buffer: 9\n")
    config = load_config(str(explicit), env={"POSTROOM_CONFIG": str(named)})
    assert config.email.buffer == 9
    assert config.source == str(explicit)


def test_os_environ_is_the_default_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("POSTROOM_EMAIL__BUFFER", "11")
    assert load_config().email.buffer == 11


def test_missing_explicit_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, env={})
    assert str(info.value) == f"{missing}: no such config file"


def test_missing_file_named_by_variable_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"no such config file \(named by \$POSTROOM_CONFIG\)"):
        load_config(env={"POSTROOM_CONFIG": str(missing)})


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path, env={})


def test_mapping_source(tmp_path: Path) -> None:
    config = load_config({"email": {"queue": {"default": {"engine": "memory"}}}}, env={})
    assert config.source == "dict"
    assert config.email.queue["default"].engine == "memory"


# ---- YAML problems ------------------------------------------------------------------------


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, "email:\n  buffer: 250\n  queue: [unclosed\n")
    assert message.startswith(f"{tmp_path / 'postroom.yaml'}, line ")
    assert "invalid YAML" in message


def test_yaml_error_line_number_is_one_based(tmp_path: Path) -> None:
    message = error_of(tmp_path, "email:\n  buffer: 1\n   bad: 2\n")
    assert ", line 3, column" in message


def test_duplicate_key_is_refused_with_its_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, "email:\n  buffer: 1\n  buffer: 2\n")
    assert "line 3" in message and "'buffer' appears twice" in message


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert "expected a mapping" in error_of(tmp_path, "- email\n")


# ---- key, type, duration and range errors -------------------------------------------------


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    message = error_of(tmp_path, "email:\n  server:\n    max-fail: 3\n")
    assert message == "email.server.max-fail: unknown key (did you mean email.server.max-fails?)"


def test_underscored_key_suggests_the_dashed_one(tmp_path: Path) -> None:
    message = error_of(tmp_path, "email:\n  server:\n    max_time: 1h\n")
    assert message.startswith("email.server.max_time: unknown key")
    assert "email.server.max-time" in message


def test_server_section_at_top_level_points_under_email(tmp_path: Path) -> None:
    message = error_of(tmp_path, "server:\n  batch: 5\n")
    assert message == "server: unknown key (did you mean email.server?)"


def test_unknown_key_inside_a_named_queue(tmp_path: Path) -> None:
    message = error_of(tmp_path, "email:\n  queue:\n    default:\n      hots: x\n")
    assert message.startswith("email.queue.default.hots: unknown key")
    assert "email.queue.default.host" in message


@pytest.mark.parametrize(
    ("yaml_text", "expected_start"),
    [
        ("email:\n  buffer: true\n", "email.buffer: expected an integer, got true (a boolean)"),
        ("email:\n  buffer: 2.5\n", "email.buffer: expected an integer"),
        ("email:\n  server:\n    smtp:\n      port: '25'\n", "email.server.smtp.port: expected an"),
        (
            "email:\n  server:\n    smtp:\n      host: 12\n",
            "email.server.smtp.host: expected a str",
        ),
        ("email:\n  server:\n    smtp:\n      verify: 'yes'\n", "email.server.smtp.verify: expect"),
        (
            "email:\n  server:\n    retry:\n      jitter: false\n",
            "email.server.retry.jitter: expec",
        ),
        ("email:\n  server: 5\n", "email.server: expected a mapping"),
        ("email:\n  buffer:\n", "email.buffer: expected an integer, got null"),
    ],
)
def test_wrong_types_are_refused(tmp_path: Path, yaml_text: str, expected_start: str) -> None:
    assert error_of(tmp_path, yaml_text).startswith(expected_start)


def test_secret_of_wrong_type_does_not_echo_the_value(tmp_path: Path) -> None:
    message = error_of(
        tmp_path, "email:\n  server:\n    smtp:\n      auth:\n        password: 918273\n"
    )
    assert message.startswith("email.server.smtp.auth.password: expected a string")
    assert "918273" not in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1x", 'email.server.max-time: "1x" is not a duration'),
        ("-5m", 'email.server.max-time: "-5m" is not a duration'),
        ("30", 'email.server.max-time: 30 is not a duration: add a unit, e.g. "30s"'),
        ("0s", "email.server.max-time: 0s is out of range (must be more than 0s)"),
    ],
)
def test_bad_durations_are_refused(tmp_path: Path, value: str, expected: str) -> None:
    message = error_of(tmp_path, f"email:\n  server:\n    max-time: {value}\n")
    assert message.startswith(expected)


def test_durations_are_go_style(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        email:
          enqueue-timeout: 0
          server:
            max-time: 1h30m
            lease: 90s
            smtp:
              connect-timeout: 1500ms
        """,
    )
    assert config.email.enqueue_timeout == timedelta(0)
    assert config.email.server.max_time == timedelta(minutes=90)
    assert config.email.server.lease == timedelta(seconds=90)
    assert config.email.server.smtp.connect_timeout == timedelta(seconds=1.5)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("email:\n  buffer: 0\n", "email.buffer: 0 is out of range (must be at least 1)"),
        (
            "email:\n  server:\n    smtp:\n      port: 70000\n",
            "email.server.smtp.port: 70000 is out of range (must be between 1 and 65535)",
        ),
        (
            "email:\n  server:\n    retry:\n      jitter: 1.5\n",
            "email.server.retry.jitter: 1.5 is out of range (must be between 0.0 and 1.0)",
        ),
        (
            "email:\n  server:\n    max-fails: 0\n",
            "email.server.max-fails: 0 is out of range (must be at least 1)",
        ),
        (
            "email:\n  server:\n    batch: 20000\n",
            "email.server.batch: 20000 is out of range (must be between 1 and 10000)",
        ),
        (
            "email:\n  queue:\n    default:\n      db: -1\n",
            "email.queue.default.db: -1 is out of range (must be at least 0)",
        ),
        (
            "email:\n  server:\n    retry:\n      initial: 1m\n      max: 10s\n",
            "email.server.retry.max: 10s is less than email.server.retry.initial (1m)",
        ),
    ],
)
def test_out_of_range_numbers_are_refused(tmp_path: Path, yaml_text: str, expected: str) -> None:
    assert error_of(tmp_path, yaml_text) == expected


@pytest.mark.parametrize(
    ("yaml_text", "expected_start"),
    [
        (
            "email:\n  queue:\n    default:\n      engine: rabbitmq\n",
            'email.queue.default.engine: "rabbitmq" is not one of redis, sqlite, memory',
        ),
        (
            "email:\n  server:\n    database:\n      engine: sqlite\n",
            'email.server.database.engine: "sqlite" is not one of sqlite3, postgres; '
            "did you mean sqlite3?",
        ),
        (
            "email:\n  server:\n    smtp:\n      tls: ssl\n",
            'email.server.smtp.tls: "ssl" is not one of auto, starttls, implicit, none',
        ),
    ],
)
def test_unknown_engines_and_modes_are_refused(
    tmp_path: Path, yaml_text: str, expected_start: str
) -> None:
    assert error_of(tmp_path, yaml_text).startswith(expected_start)


# ---- queues -------------------------------------------------------------------------------


def test_named_queues_besides_default(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        email:
          queue:
            default: {engine: sqlite}
            bulk-mail: {engine: redis, name: bulk}
        """,
    )
    assert list(config.email.queue) == ["default", "bulk-mail"]
    assert config.email.queue["bulk-mail"].engine == "redis"


def test_default_queue_is_required(tmp_path: Path) -> None:
    message = error_of(tmp_path, "email:\n  queue:\n    bulk: {engine: memory}\n")
    assert message == 'email.queue: a queue named "default" is required (found: bulk)'


def test_queue_names_are_restricted(tmp_path: Path) -> None:
    message = error_of(tmp_path, "email:\n  queue:\n    default: {}\n    'a b': {}\n")
    assert message.startswith("email.queue.a b: a name may use only")


def test_sqlite_queue_name_must_be_a_table_name(tmp_path: Path) -> None:
    message = error_of(tmp_path, "email:\n  queue:\n    default:\n      name: my-queue\n")
    assert message.startswith('email.queue.default.name: "my-queue" is not a table name')


def test_redis_url_sets_the_engine_and_is_used_as_given(tmp_path: Path) -> None:
    config = load_text(
        tmp_path, "email:\n  queue:\n    default:\n      url: rediss://:pw@cache:6380/2\n"
    )
    queue = config.email.queue["default"]
    assert queue.engine == "redis"
    assert queue.redis_url() == "rediss://:pw@cache:6380/2"
    assert ":pw@" not in repr(config) and ":pw@" not in render_config(config)
    assert "rediss://:********@cache:6380/2" in render_config(config)


def test_redis_url_refused_for_another_engine(tmp_path: Path) -> None:
    text = "email:\n  queue:\n    default:\n      engine: sqlite\n      url: redis://h/0\n"
    assert error_of(tmp_path, text) == (
        "email.queue.default.url: is only read by engine redis, not sqlite"
    )


def test_redis_url_with_another_scheme_is_refused(tmp_path: Path) -> None:
    text = "email:\n  queue:\n    default:\n      url: http://u:secret@h/0\n"
    message = error_of(tmp_path, text)
    assert message.startswith("email.queue.default.url:") and "not a Redis URL" in message
    assert "secret" not in message


def test_redis_url_built_from_parts() -> None:
    queue = QueueConfig(engine="redis", host="cache", port=6380, db=3, password=Secret("p@ss/w"))
    assert queue.redis_url() == "redis://:p%40ss%2Fw@cache:6380/3"
    assert QueueConfig(host="::1").redis_url() == "redis://[::1]:6379/0"
    with_url = QueueConfig(url="redis://cache:6379/0", password=Secret("pw"))
    assert with_url.redis_url() == "redis://:pw@cache:6379/0"
    assert QueueConfig(url="redis://:own@c/0", password=Secret("pw")).redis_url() == (
        "redis://:own@c/0"
    )


# ---- the database -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:pw@db:5432/mail",
        "postgres://u:pw@db:5432/mail",
        "postgresql+psycopg://u:pw@db:5432/mail",
    ],
)
def test_postgres_urls_are_normalised(tmp_path: Path, url: str) -> None:
    config = load_text(tmp_path, f"email:\n  server:\n    database:\n      url: {url}\n")
    database = config.email.server.database
    assert database.engine == "postgres"
    assert database.sqlalchemy_url() == "postgresql+psycopg://u:pw@db:5432/mail"
    assert ":pw@" not in repr(config) and ":pw@" not in render_config(config)


def test_postgres_engine_needs_a_url(tmp_path: Path) -> None:
    message = error_of(tmp_path, "email:\n  server:\n    database:\n      engine: postgres\n")
    assert message.startswith("email.server.database.url: is required for engine postgres")


def test_database_url_must_match_the_engine(tmp_path: Path) -> None:
    text = "email:\n  server:\n    database:\n      engine: sqlite3\n      url: postgres://h/db\n"
    assert error_of(tmp_path, text) == (
        "email.server.database.url: is a postgres URL but engine is sqlite3"
    )


def test_unsupported_database_url_is_refused(tmp_path: Path) -> None:
    text = "email:\n  server:\n    database:\n      url: mysql://u:hidden@h/db\n"
    message = error_of(tmp_path, text)
    assert message.startswith('email.server.database.url: "mysql://u:********@h/db" is not one')


@pytest.mark.parametrize(
    ("url", "path"),
    [("sqlite:///relative.db", "relative.db"), ("sqlite:////abs/mail.db", "/abs/mail.db")],
)
def test_sqlite_url_is_allowed(tmp_path: Path, url: str, path: str) -> None:
    config = load_text(tmp_path, f"email:\n  server:\n    database:\n      url: {url}\n")
    database = config.email.server.database
    assert (database.engine, database.path) == ("sqlite3", path)
    assert database.sqlalchemy_url() == url


def test_sqlite_url_and_different_path_conflict(tmp_path: Path) -> None:
    text = "email:\n  server:\n    database:\n      url: sqlite:///a.db\n      path: b.db\n"
    assert error_of(tmp_path, text) == 'email.server.database.url: names "a.db" but path is "b.db"'


def test_postgres_without_url_fails_when_asked_for_a_url() -> None:
    with pytest.raises(ConfigError, match=r"^email\.server\.database\.url: "):
        DatabaseConfig(engine="postgres").sqlalchemy_url()


# ---- SMTP auth ----------------------------------------------------------------------------


def test_auth_host_must_match_smtp_host(tmp_path: Path) -> None:
    text = """
    email:
      server:
        smtp:
          host: smtp.example.com
          auth: {username: u, password: p, host: smtp.other.com}
    """
    message = error_of(tmp_path, text)
    assert message.startswith('email.server.smtp.auth.host: "smtp.other.com" differs from')


def test_auth_needs_username_and_password_together(tmp_path: Path) -> None:
    text = "email:\n  server:\n    smtp:\n      auth:\n        username: u\n"
    assert error_of(tmp_path, text) == (
        "email.server.smtp.auth.password: is required when the other one is set"
    )


# ---- ${VAR} substitution ------------------------------------------------------------------

SUBSTITUTED = """
email:
  queue:
    default:
      host: ${REDIS_HOST:-fallback-host}
      url: redis://:${REDIS_PASSWORD}@cache:6379/0
  server:
    smtp:
      port: ${SMTP_PORT}
      verify: ${SMTP_VERIFY}
      helo: mail-${SUFFIX}.example.com
      auth:
        identity: id-$${NOT_A_VAR}-${SUFFIX}
        username: user
        password: ${SMTP_PASSWORD}
"""

SUBST_ENV = {
    "REDIS_PASSWORD": "r-secret",
    "SMTP_PORT": "587",
    "SMTP_VERIFY": "false",
    "SUFFIX": "x",
    "SMTP_PASSWORD": "s-secret",
}


def test_variables_are_substituted_and_typed(tmp_path: Path) -> None:
    config = load_text(tmp_path, SUBSTITUTED, SUBST_ENV)
    queue, smtp = config.email.queue["default"], config.email.server.smtp
    assert queue.host == "fallback-host"
    assert queue.redis_url() == "redis://:r-secret@cache:6379/0"
    assert (smtp.port, smtp.verify) == (587, False)
    assert smtp.helo == "mail-x.example.com"
    assert smtp.auth.identity == "id-${NOT_A_VAR}-x"
    assert smtp.auth.password.reveal() == "s-secret"
    for shown in (repr(config), render_config(config)):
        assert "r-secret" not in shown and "s-secret" not in shown


def test_unset_variable_names_key_and_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in SUBST_ENV.items() if k != "SMTP_PASSWORD"}
    message = error_of(tmp_path, SUBSTITUTED, env)
    assert (
        message == "email.server.smtp.auth.password: ${SMTP_PASSWORD} is not set in the environment"
    )


def test_substituted_value_of_the_wrong_type_names_the_variable(tmp_path: Path) -> None:
    message = error_of(tmp_path, SUBSTITUTED, {**SUBST_ENV, "SMTP_PORT": "smtp"})
    assert message == 'email.server.smtp.port: "smtp" is not an integer (from ${SMTP_PORT})'


def test_variable_set_but_empty_gives_an_empty_string(tmp_path: Path) -> None:
    config = load_text(tmp_path, "email:\n  server:\n    smtp:\n      helo: a${E}b\n", {"E": ""})
    assert config.email.server.smtp.helo == "ab"


def test_mapping_sources_are_not_substituted() -> None:
    config = load_config({"email": {"server": {"dispatcher-id": "${X}"}}}, env={})
    assert config.email.server.dispatcher_id == "${X}"


# ---- environment overrides and precedence -------------------------------------------------


def test_env_name_spelling() -> None:
    assert env_name("email.server.max-fails") == "POSTROOM_EMAIL__SERVER__MAX_FAILS"
    assert env_name("email.queue.default.url") == "POSTROOM_EMAIL__QUEUE__DEFAULT__URL"


def test_env_overrides_are_typed(tmp_path: Path) -> None:
    env = {
        "POSTROOM_EMAIL__SERVER__MAX_FAILS": "5",
        "POSTROOM_EMAIL__SERVER__SMTP__VERIFY": "no",
        "POSTROOM_EMAIL__SERVER__MAX_TIME": "2h30m",
        "POSTROOM_EMAIL__SERVER__RETRY__JITTER": "0.5",
        "POSTROOM_EMAIL__SERVER__SMTP__AUTH__USERNAME": "u",
        "POSTROOM_EMAIL__SERVER__SMTP__AUTH__PASSWORD": "12345",
        "POSTROOM_EMAIL__QUEUE__DEFAULT__URL": "redis://cache:6379/1",
    }
    config = load_config(SEED_CLIENT, env=env)
    server = config.email.server
    assert server.max_fails == 5
    assert server.smtp.verify is False
    assert server.max_time == timedelta(hours=2, minutes=30)
    assert server.retry.jitter == 0.5
    assert server.smtp.auth.password.reveal() == "12345"  # a string stays a string
    assert config.email.queue["default"].redis_url() == "redis://cache:6379/1"
    assert config.email.queue["default"].name == "myqueue"  # the rest of the file stays


def test_env_overrides_apply_to_the_embedded_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"POSTROOM_EMAIL__SERVER__DATABASE__URL": "postgresql://u@db/mail"}
    config = load_config(env=env)
    assert config.source == "embedded default"
    assert config.email.server.database.engine == "postgres"


def test_bad_env_value_names_key_and_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({}, env={"POSTROOM_EMAIL__SERVER__BATCH": "lots"})
    assert str(info.value) == (
        'email.server.batch: "lots" is not an integer (from $POSTROOM_EMAIL__SERVER__BATCH)'
    )


def test_unknown_env_variable_is_refused_with_a_suggestion() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({}, env={"POSTROOM_EMAIL__SERVER__MAX_FAIL": "5"})
    assert str(info.value) == (
        "$POSTROOM_EMAIL__SERVER__MAX_FAIL: names no configuration key "
        "(did you mean $POSTROOM_EMAIL__SERVER__MAX_FAILS?)"
    )


def test_env_variable_naming_a_section_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"names the section email.server.smtp"):
        load_config({}, env={"POSTROOM_EMAIL__SERVER__SMTP": "x"})


def test_other_postroom_variables_are_not_config_keys() -> None:
    env = {"POSTROOM_TEST_REDIS_URL": "redis://x", "POSTROOM_CONFIG": "", "POSTROOM_DEBUG": "1"}
    assert load_config({}, env=env) == default_config()


def test_env_override_finds_a_dashed_queue_name_or_adds_a_queue() -> None:
    source = {"email": {"queue": {"default": {}, "bulk-mail": {"engine": "memory"}}}}
    env = {
        "POSTROOM_EMAIL__QUEUE__BULK_MAIL__NAME": "bulk",
        "POSTROOM_EMAIL__QUEUE__EXTRA__ENGINE": "memory",
    }
    queues = load_config(source, env=env).email.queue
    assert queues["bulk-mail"].name == "bulk"
    assert queues["extra"].engine == "memory"


def test_precedence_argument_env_file_defaults(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("email:\n  buffer: 1\n  server:\n    batch: 2\n    max-fails: 3\n")
    env = {"POSTROOM_EMAIL__BUFFER": "10", "POSTROOM_EMAIL__SERVER__BATCH": "20"}
    config = load_config(path, env=env, overrides={"email.buffer": 100})
    assert config.email.buffer == 100  # argument > environment > file
    assert config.email.server.batch == 20  # environment > file
    assert config.email.server.max_fails == 3  # file > defaults
    assert config.email.server.lease == timedelta(minutes=1)  # defaults


def test_string_overrides_are_parsed_and_checked() -> None:
    config = load_config({}, env={}, overrides={"email.server.max-time": "3h"})
    assert config.email.server.max_time == timedelta(hours=3)
    with pytest.raises(ConfigError, match=r"^email.server.max-tim: unknown key"):
        load_config({}, env={}, overrides={"email.server.max-tim": "3h"})


def test_env_override_below_a_scalar_is_refused(tmp_path: Path) -> None:
    message = error_of(tmp_path, "email:\n  server: 5\n", {"POSTROOM_EMAIL__SERVER__BATCH": "1"})
    assert message.startswith("email.server: expected a mapping of keys (while applying $POSTROOM")


# ---- secrets and rendering ----------------------------------------------------------------


def test_secret_hides_its_value() -> None:
    secret = Secret("hunter2")
    assert repr(secret) == str(secret) == f"{secret}" == "********"
    assert secret.reveal() == "hunter2"
    assert secret == Secret("hunter2") and secret != Secret("other")
    assert secret != "hunter2"
    assert hash(secret) == hash(Secret("hunter2"))
    assert bool(secret) and not Secret()


def test_redact_url() -> None:
    assert redact_url("postgresql://u:pw@h:5432/db") == "postgresql://u:********@h:5432/db"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
    assert redact_url("postgresql://h/db?sslmode=require&password=pw") == (
        "postgresql://h/db?sslmode=require&password=********"
    )


def test_render_round_trips_through_load(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        email:
          queue:
            default: {engine: redis, url: "redis://cache:6379/0"}
          server:
            max-time: 1h30m
            retry: {initial: 250ms}
        """,
    )
    rendered = render_config(config)
    assert "max-time: 1h30m" in rendered and "initial: 250ms" in rendered
    assert load_config(yaml.safe_load(rendered), env={}) == config
    assert config.redacted_dict()["email"]["server"]["max-time"] == "1h30m"  # type: ignore[index]


def test_empty_secret_renders_as_empty() -> None:
    plain = default_config().redacted_dict()
    assert plain["email"]["server"]["smtp"]["auth"]["password"] == ""  # type: ignore[index]


# ---- import has no side effects -----------------------------------------------------------


def test_import_reads_no_config_and_touches_no_disk(tmp_path: Path) -> None:
    (tmp_path / "postroom.yaml").write_text("email: [this is : not valid\n")
    code = "import postroom.config, postroom.config._load, postroom.config._build"
    env = {"POSTROOM_CONFIG": str(tmp_path / "missing.yaml"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["postroom.yaml"]


def test_a_lease_shorter_than_five_heartbeats_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"email\.server\.lease: 5s is less than 5 heartbeats"):
        load_config({"email": {"server": {"lease": "5s", "heartbeat": "2s"}}})
