import pickle
from pathlib import Path

import pytest

import ciro
from ciro import CiroError, Config, ConfigError, errors


def test_precedence_args_over_env_over_file_over_defaults(tmp_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Config.load().max_batch_size == 64  # default
    tmp_home.mkdir(parents=True)
    (tmp_home / "config.toml").write_text("max_batch_size = 8\nnum_workers = 3\nport = 9001\n")
    cfg = Config.load()
    assert (cfg.max_batch_size, cfg.num_workers, cfg.port) == (8, 3, 9001)  # file
    monkeypatch.setenv("CIRO_MAX_BATCH_SIZE", "16")
    cfg = Config.load()
    assert (cfg.max_batch_size, cfg.num_workers) == (16, 3)  # env beats file
    cfg = Config.load(max_batch_size=32, num_workers=None)
    assert (cfg.max_batch_size, cfg.num_workers) == (32, 3)  # args beat env; None = not given
    assert cfg.home == tmp_home


def test_config_file_location_can_be_overridden(
    tmp_path: Path, tmp_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other.toml"
    other.write_text('gateway_url = "http://example.invalid:1"\n')
    monkeypatch.setenv("CIRO_CONFIG", str(other))
    assert Config.load().url == "http://example.invalid:1"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"num_workers": -1}, "num_workers"), ({"heartbeat_timeout_s": 0}, "heartbeat_timeout_s"),
     ({"port": 70000}, "port"), ({"max_batch_size": "x"}, "max_batch_size"),
     ({"jobstore_sync": "SOMETIMES"}, "jobstore_sync"), ({"bogus": 1}, "Unknown setting")],
)
def test_bad_settings_raise_config_error(tmp_home: Path, kwargs: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.load(**kwargs)
    assert needle in str(info.value)


def test_bad_config_file_is_reported(tmp_home: Path) -> None:
    tmp_home.mkdir(parents=True)
    (tmp_home / "config.toml").write_text("this is = = not toml")
    with pytest.raises(ConfigError, match="config file"):
        Config.load()
    (tmp_home / "config.toml").write_text("nonsense = 1\n")
    with pytest.raises(ConfigError, match="nonsense"):
        Config.load()


def _error_classes() -> list[type[CiroError]]:
    return [getattr(errors, n) for n in errors.__all__ if isinstance(getattr(errors, n), type)]


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda c: c.__name__)
def test_every_error_pickles_and_travels_over_http(cls: type[CiroError]) -> None:
    err = cls("something broke. Do this next.", detail={"job_id": "abc"})
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls and back.message == err.message and back.detail == {"job_id": "abc"}
    wire = errors.error_from_payload(err.to_payload(), status=cls.http_status)
    assert type(wire) is cls and str(wire) == str(err)
    assert isinstance(err, CiroError)


def test_errors_subclass_the_stdlib_types_users_catch() -> None:
    assert issubclass(ciro.GatewayUnavailableError, ConnectionError)
    assert issubclass(ciro.InputError, ValueError)
    assert issubclass(ciro.ModelNotFoundError, LookupError)
    assert issubclass(ciro.JobTimeoutError, TimeoutError)


def test_unknown_error_payload_becomes_protocol_error() -> None:
    assert isinstance(errors.error_from_payload({"detail": "x"}, status=500), ciro.ProtocolError)


def test_public_names() -> None:
    assert set(ciro.__all__) == {n for n in dir(ciro) if not n.startswith("_")} - {
        "client", "config", "errors", "jobs", "modelstore", "tensors", "local", "demo", "cli", "identity",
        "receipts", "quorum", "auth", "chain", "deployments", "sources", "processing", "tls", "sealing",
        "options", "zk", "zk_verify", "zk_batch", "estimate", "tokenizing", "textmodels", "networks", "plugins", "home",
        "levels", "procs", "convert", "merkle",
    } | {"__version__"}  # submodules (zk ones load lazily)
    for name in ciro.__all__:
        assert hasattr(ciro, name), name
