"""The config loader: file < environment < argument, lists and labels, errors that say where."""

from __future__ import annotations

import importlib
import pickle
from dataclasses import dataclass, fields

import pytest

from hcstore.config import AgentConfig, ClientConfig, ControllerConfig, _Settings
from hcstore.control.membership import Intervals
from hcstore.errors import InvalidRequest


def write_toml(tmp_path, text: str, name: str = "agent.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_file_then_environment_then_argument(tmp_path):
    path = write_toml(tmp_path, 'durability = "none"\nport = 7001\nweight = 2\nscan_interval = 5.5\n')
    env = {"HCSTORE_PORT": "7002", "HCSTORE_WEIGHT": "3.5"}
    assert AgentConfig.load(path, environ={}).port == 7001
    config = AgentConfig.load(path, environ=env, weight=4.0, scan_interval=None)
    assert (config.durability, config.port, config.weight, config.scan_interval) == ("none", 7002, 4.0, 5.5)
    assert config.high_watermark == AgentConfig().high_watermark  # untouched: the default
    assert isinstance(AgentConfig.load(path, environ={}).weight, float)  # a TOML integer for a float field


def test_environment_is_read_from_os_environ_by_default(monkeypatch, tmp_path):
    monkeypatch.setenv("HCSTORE_DURABILITY", "always")
    assert AgentConfig.load(write_toml(tmp_path, 'durability = "none"\n')).durability == "always"
    assert AgentConfig.from_env().durability == "always"
    assert AgentConfig.from_env(durability="commit").durability == "commit"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("/nvme0", ("/nvme0",)),
        ("/nvme0,/nvme1", ("/nvme0", "/nvme1")),
        (" /nvme0 , /nvme1 ,", ("/nvme0", "/nvme1")),
        ("", ()),
    ],
)
def test_mountpaths_from_the_environment_are_a_comma_separated_list(text, expected):
    assert AgentConfig.load(environ={"HCSTORE_MOUNTPATHS": text}).mountpaths == expected


def test_labels_from_the_environment():
    config = AgentConfig.load(environ={"HCSTORE_LABELS": "zone=a,rack=r1"})
    assert config.labels == (("zone", "a"), ("rack", "r1"))


def test_lists_and_labels_from_a_file(tmp_path):
    path = write_toml(tmp_path, 'mountpaths = ["/nvme0", "/nvme1"]\nlabels = {zone = "a", rack = "r1"}\n')
    config = AgentConfig.load(path, environ={})
    assert config.mountpaths == ("/nvme0", "/nvme1")
    assert config.labels == (("zone", "a"), ("rack", "r1"))


def test_arguments_are_normalized_and_checked(tmp_path):
    config = AgentConfig(mountpaths=[tmp_path / "a", "/b"], labels={"zone": "a"})
    assert config.mountpaths == (str(tmp_path / "a"), "/b")
    assert config.labels == (("zone", "a"),)
    with pytest.raises(InvalidRequest, match="mountpaths"):
        AgentConfig(mountpaths="/nvme0")  # a string is not a list of one path
    assert pickle.loads(pickle.dumps(config)) == config


@pytest.mark.parametrize(
    "text, setting",
    [
        ('port = "7000"', "port"),
        ("port = 7000.0", "port"),
        ("port = 70000", "port"),
        ("high_watermark = 1.5", "high_watermark"),
        ('durability = "sometimes"', "durability"),
        ("capacity_bytes = -1", "capacity_bytes"),
        ('node_id = ""', "node_id"),
        ("heartbeat = 0", "heartbeat"),
        ("heartbeat = true", "heartbeat"),
        ('mountpaths = "/nvme0"', "mountpaths"),
        ("mountpaths = [1, 2]", "mountpaths"),
        ('labels = ["zone=a"]', "labels"),
        ("labels = {zone = 1}", "labels"),
        ("metrics_port = -2", "metrics_port"),
        ("metrics_port = 65536", "metrics_port"),
        ('log_format = "xml"', "log_format"),
        ("background_nice = 20", "background_nice"),
        ("background_nice = -1", "background_nice"),
    ],
)
def test_a_bad_value_in_a_file_names_the_setting_and_the_file(tmp_path, text, setting):
    path = write_toml(tmp_path, text + "\n")
    with pytest.raises(InvalidRequest) as caught:
        AgentConfig.load(path, environ={})
    message = str(caught.value)
    assert setting in message and str(path) in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    "variable, text",
    [
        ("HCSTORE_PORT", "seven"),
        ("HCSTORE_HIGH_WATERMARK", "1.5"),
        ("HCSTORE_DURABILITY", "sometimes"),
        ("HCSTORE_LABELS", "zone"),
        ("HCSTORE_LABELS", "=a"),
        ("HCSTORE_REPAIR_RATE", "fast"),
    ],
)
def test_a_bad_environment_variable_names_the_variable(variable, text):
    with pytest.raises(InvalidRequest, match=variable):
        AgentConfig.load(environ={variable: text})


def test_a_bad_argument_names_the_setting():
    with pytest.raises(InvalidRequest, match="port") as caught:
        AgentConfig.load(environ={}, port=-1)
    assert "HCSTORE" not in str(caught.value)
    with pytest.raises(InvalidRequest, match="unknown AgentConfig setting"):
        AgentConfig.load(environ={}, prot=7000)


def test_an_unknown_key_in_a_file_is_rejected_with_a_suggestion(tmp_path):
    path = write_toml(tmp_path, 'durabilty = "none"\n')
    with pytest.raises(InvalidRequest, match="unknown setting 'durabilty'") as caught:
        AgentConfig.load(path, environ={})
    assert str(path) in str(caught.value) and "did you mean 'durability'" in str(caught.value)


def test_a_missing_or_broken_file_names_the_file(tmp_path):
    with pytest.raises(InvalidRequest, match="no such config file") as caught:
        AgentConfig.load(tmp_path / "nowhere.toml")
    assert "nowhere.toml" in str(caught.value)
    path = write_toml(tmp_path, "port = = 1\n")
    with pytest.raises(InvalidRequest, match="not a valid TOML file") as caught:
        AgentConfig.load(path)
    assert str(path) in str(caught.value)


def test_controller_intervals_are_checked_together(tmp_path):
    config = ControllerConfig.load(write_toml(tmp_path, "heartbeat = 0.25\nout_after = 30\n", "c.toml"), environ={})
    assert config.intervals == Intervals(0.25, Intervals.suspect_after, Intervals.down_after, 30.0)
    path = write_toml(tmp_path, "suspect_after = 0.5\n", "controller.toml")
    with pytest.raises(InvalidRequest, match="suspect_after") as caught:
        ControllerConfig.load(path, environ={})
    assert str(path) in str(caught.value)
    with pytest.raises(InvalidRequest, match="HCSTORE_DOWN_AFTER"):
        ControllerConfig.load(environ={"HCSTORE_DOWN_AFTER": "1"})


def test_controller_ec_is_checked(tmp_path):
    assert ControllerConfig().ec == ""  # none: clients choose
    path = write_toml(tmp_path, 'ec = "4-2"\n', "controller.toml")
    with pytest.raises(InvalidRequest, match="ec") as caught:
        ControllerConfig.load(path, environ={})
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    "config, include",
    [
        (AgentConfig(), ()),
        (
            AgentConfig(
                node_id="gpu7",
                mountpaths=("/nvme0", "/nvme1"),
                labels={"zone": "a", "rack": "r1"},
                durability="none",
                port=7001,
                repair_rate=0,
                ready_file="/run/agent.json",
            ),
            ("node_id",),
        ),
        (AgentConfig(node_id="n1"), ("node_id",)),
        (ControllerConfig(port=7000, ec="8+2", heartbeat=0.5, out_after=60), ()),
        (ControllerConfig(metrics_port=9100, metrics_host="127.0.0.1", log_format="json"), ()),
        (ClientConfig(ec="10+4", codec="zfec", chunk_size=64 << 10), ()),
    ],
)
def test_write_then_load_gives_the_same_config(tmp_path, config, include):
    path = tmp_path / "settings.toml"
    config.write(path, include=include)
    assert type(config).load(path, environ={}) == config
    written = path.read_text()
    for name in include:
        assert f"{name} =" in written
    defaults = type(config)()
    for f in fields(config):
        if getattr(config, f.name) == getattr(defaults, f.name) and f.name not in include:
            assert f"\n{f.name} =" not in written, f"{f.name} is at its default but was written"


def test_every_field_can_come_from_the_environment():
    values = {
        "node_id": "n9",
        "mountpaths": "/a,/b",
        "host": "127.0.0.2",
        "port": "7003",
        "durability": "none",
        "high_watermark": "0.5",
        "capacity_bytes": "0x1000",
        "upload_ttl": "60",
        "controller": "tcp://x:1",
        "labels": "zone=a",
        "weight": "2",
        "heartbeat": "0.5",
        "state_dir": "/s",
        "repair_rate": "1e6",
        "repair_workers": "3",
        "background_nice": "5",
        "scan_interval": "2",
        "scrub_interval": "3",
        "ready_file": "/r",
        "log_file": "/l",
        "io_workers": "2",
        "read_workers": "5",
        "io_queue": "64",
        "io_queue_bytes": "0x100000",
        "log_format": "json",
        "metrics_host": "127.0.0.3",
        "metrics_port": "-1",
        "key": "/k/n9.key_secret",
        "controller_key": "/k/controller.key",
        "insecure": "true",
    }
    assert set(values) == {f.name for f in fields(AgentConfig)}
    config = AgentConfig.load(environ={f"HCSTORE_{k.upper()}": v for k, v in values.items()})
    assert config.capacity_bytes == 4096 and config.mountpaths == ("/a", "/b") and config.repair_rate == 1e6
    assert (config.log_format, config.metrics_host, config.metrics_port) == ("json", "127.0.0.3", -1)
    assert (config.key, config.insecure) == ("/k/n9.key_secret", True)
    assert config.background_nice == 5
    assert ClientConfig.load(environ={"HCSTORE_CODEC": ""}).codec is None


@dataclass(frozen=True)
class _Switches(_Settings):
    """A config with a boolean, to test how booleans load."""

    verbose: bool = False


@pytest.mark.parametrize("text, expected", [("true", True), ("1", True), ("off", False), ("False", False)])
def test_booleans_from_the_environment(text, expected):
    assert _Switches.load(environ={"HCSTORE_VERBOSE": text}).verbose is expected


def test_bad_booleans(tmp_path):
    with pytest.raises(InvalidRequest, match="HCSTORE_VERBOSE"):
        _Switches.load(environ={"HCSTORE_VERBOSE": "maybe"})
    path = write_toml(tmp_path, "verbose = 1\n", "switches.toml")
    with pytest.raises(InvalidRequest, match="verbose") as caught:
        _Switches.load(path, environ={})
    assert str(path) in str(caught.value)
    assert _Switches.load(write_toml(tmp_path, "verbose = true\n", "on.toml"), environ={}).verbose is True


@pytest.mark.parametrize(
    "agent, intervals, needle",
    [
        ({"durabilty": "none"}, {}, "durabilty"),
        ({"durability": "sometimes"}, {}, "durability"),
        ({"mountpaths": ["/nvme0"]}, {}, "mountpaths"),
        ({}, {"suspect_after": 0.1}, "suspect_after"),
        ({}, {"port": 7000}, "port"),
    ],
)
def test_ray_deploy_checks_settings_before_starting_anything(agent, intervals, needle):
    deploy = importlib.import_module("ray_integration.deploy")  # the module; the package exports a function
    deploy.check_settings({"durability": "none", "repair_rate": 0}, {"heartbeat": 0.5})
    deploy.check_settings({"durability": None}, {})  # None: not given
    with pytest.raises(InvalidRequest, match=needle):
        deploy.check_settings(agent, intervals)
