"""The ``hcstore`` command line, run as a subprocess against a real cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hcstore.cluster.local import LocalCluster
from integration_support import clean_env, cli_ok, one_line_error, run_cli, seeded_bytes, wait_until


@pytest.fixture(scope="module")
def cli_env(shared_cluster, tmp_path_factory):
    return clean_env(tmp_path_factory.mktemp("home"), HCSTORE_CLUSTER=str(shared_cluster.path))


def test_put_get_ls_stat_rm(cli_env, tmp_path, shared_client):
    data = seeded_bytes("cli", 700_001)
    source = tmp_path / "model.bin"
    source.write_bytes(data)
    put = cli_ok(run_cli("put", str(source), "hcstore://clitest/ckpt/model.bin", env=cli_env))
    assert b"hcstore://clitest/ckpt/model.bin" in put.stdout
    assert shared_client.get("clitest", "ckpt/model.bin") == data

    target = tmp_path / "back.bin"
    cli_ok(run_cli("get", "hcstore://clitest/ckpt/model.bin", str(target), env=cli_env))
    assert target.read_bytes() == data
    into_dir = tmp_path / "dir"
    into_dir.mkdir()
    cli_ok(run_cli("get", "clitest/ckpt/model.bin", str(into_dir), env=cli_env))
    assert (into_dir / "model.bin").read_bytes() == data
    stdout = cli_ok(run_cli("get", "hcstore://clitest/ckpt/model.bin", "-", env=cli_env)).stdout
    assert stdout == data

    cli_ok(run_cli("put", "-", "hcstore://clitest/ckpt/stdin.txt", env=cli_env, stdin=b"from stdin"))
    assert shared_client.get("clitest", "ckpt/stdin.txt") == b"from stdin"

    listing = cli_ok(run_cli("ls", "hcstore://clitest/ckpt/", env=cli_env)).stdout.decode().splitlines()
    assert [line.split()[-1] for line in listing] == [
        "hcstore://clitest/ckpt/model.bin",
        "hcstore://clitest/ckpt/stdin.txt",
    ]
    assert int(listing[0].split()[0]) == len(data)
    buckets = cli_ok(run_cli("ls", env=cli_env)).stdout.decode().split()
    assert "hcstore://clitest/" in buckets

    stat = json.loads(cli_ok(run_cli("stat", "--json", "hcstore://clitest/ckpt/model.bin", env=cli_env)).stdout)
    info = shared_client.stat("clitest", "ckpt/model.bin")
    assert (stat["size"], stat["generation"], stat["k"], stat["m"]) == (len(data), info.generation, 4, 2)
    assert stat["fragments_found"] == 6 and stat["degraded"] is False

    cli_ok(run_cli("rm", "hcstore://clitest/ckpt/model.bin", env=cli_env))
    assert not shared_client.exists("clitest", "ckpt/model.bin")
    listing = cli_ok(run_cli("ls", "hcstore://clitest/ckpt/", env=cli_env)).stdout.decode()
    assert "model.bin" not in listing


def test_put_with_ec_override(cli_env, tmp_path, shared_client):
    source = tmp_path / "x.bin"
    source.write_bytes(seeded_bytes("ec", 300_000))
    cli_ok(run_cli("put", "--ec", "2+1", str(source), "hcstore://clitest/ec21", env=cli_env))
    info = shared_client.stat("clitest", "ec21")
    assert (info.k, info.m) == (2, 1)


def test_errors_are_one_line_and_exit_1(cli_env, tmp_path):
    one_line_error(run_cli("get", "hcstore://clitest/no/such/object", str(tmp_path / "x"), env=cli_env), "E_NOT_FOUND")
    assert not (tmp_path / "x").exists()
    one_line_error(run_cli("stat", "hcstore://clitest/no/such/object", env=cli_env), "E_NOT_FOUND")
    one_line_error(run_cli("rm", "hcstore://clitest/no/such/object", env=cli_env), "E_NOT_FOUND")
    one_line_error(run_cli("get", "hcstore://BAD/key", "-", env=cli_env), "E_BAD_FIELD")
    one_line_error(run_cli("put", str(tmp_path / "missing-file"), "hcstore://clitest/k", env=cli_env))
    no_cluster = {**cli_env, "HCSTORE_CLUSTER": str(tmp_path / "nowhere")}
    one_line_error(run_cli("ls", "hcstore://clitest/", env=no_cluster), "E_NO_CLUSTER")


def test_status_json(cli_env, shared_cluster):
    status = json.loads(cli_ok(run_cli("status", "--json", env=cli_env)).stdout)
    assert status["ec"] == "4+2"
    assert Path(status["cluster"]) == shared_cluster.path
    assert [n["id"] for n in status["nodes"]] == [f"n{i}" for i in range(1, 7)]
    assert all(n["state"] == "alive" and n["pid"] and len(n["mountpaths"]) == 2 for n in status["nodes"])
    table = cli_ok(run_cli("status", env=cli_env)).stdout.decode()
    assert all(f"n{i}" in table for i in range(1, 7))


def test_status_shows_a_dead_agent(make_cluster, tmp_path):
    cluster = make_cluster(agents=3, ec="2+1")
    cluster.kill("n2")
    env = clean_env(tmp_path)
    status = json.loads(cli_ok(run_cli("--cluster", str(cluster.path), "status", "--json", env=env)).stdout)
    assert {n["id"]: n["state"] for n in status["nodes"]} == {"n1": "alive", "n2": "down", "n3": "alive"}


def test_up_and_down_in_a_temporary_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    data_dir = tmp_path / "data"
    env = clean_env(home)
    try:
        up = cli_ok(run_cli("up", "--data-dir", str(data_dir), "--agents", "3", "--ec", "2+1", env=env))
        assert b"3 agents" in up.stdout
        pointer = home / ".hcstore" / "current"
        assert Path(pointer.read_text().strip()) == data_dir.resolve()
        status = json.loads(cli_ok(run_cli("status", "--json", env=env)).stdout)  # found through the pointer
        assert status["ec"] == "2+1"
        assert [(n["id"], n["state"]) for n in status["nodes"]] == [("n1", "alive"), ("n2", "alive"), ("n3", "alive")]
        pids = [n["pid"] for n in status["nodes"]]

        cli_ok(run_cli("down", "--purge", env=env))
        assert not data_dir.exists()
        assert not pointer.exists()
        wait_until(
            lambda: (
                not any(
                    Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
                    for pid in pids
                )
            ),
            timeout=10,
            what="the agents to exit",
        )
        gone = run_cli("status", env=env)
        assert gone.returncode == 1 and b"E_NO_CLUSTER" in gone.stderr  # one-line form: test_errors_are_one_line...
    finally:
        if (data_dir / "cluster.json").exists():
            LocalCluster(data_dir).destroy()


def test_put_and_get_use_the_ec_of_the_cluster_that_up_started(tmp_path):
    """A 3-agent 2+1 cluster cannot hold 4+2 objects: the CLI must write with the cluster's EC."""
    home = tmp_path / "home"
    home.mkdir()
    data_dir = tmp_path / "data"
    env = clean_env(home)
    try:
        cli_ok(run_cli("up", "--data-dir", str(data_dir), "--agents", "3", "--ec", "2+1", env=env))
        source = tmp_path / "f.bin"
        source.write_bytes(seeded_bytes("up", 200_000))
        cli_ok(run_cli("put", str(source), "hcstore://upbucket/f", env=env))
        assert cli_ok(run_cli("get", "hcstore://upbucket/f", "-", env=env)).stdout == source.read_bytes()
        stat = json.loads(cli_ok(run_cli("stat", "--json", "hcstore://upbucket/f", env=env)).stdout)
        assert (stat["k"], stat["m"]) == (2, 1)
    finally:
        if (data_dir / "cluster.json").exists():
            LocalCluster(data_dir).destroy()
