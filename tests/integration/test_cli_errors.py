"""Every ``hcstore`` verb given bad input fails with one line naming the error's code, and every
verb that talks to a cluster works through ``--cluster tcp://CONTROLLER`` as well as a directory.

Each case runs the real command as a subprocess against a real local cluster.
"""

from __future__ import annotations

import json
import socket

import pytest

from integration_support import (
    clean_env,
    cli_ok,
    key_env,
    one_line_error,
    run_cli,
    seeded_bytes,
    wait_until,
)

BUCKET = "clierr"

# (arguments, the code the error line must carry); {placeholders} are filled in by the `places` fixture.
BAD_INPUT = {
    # the command line itself
    "no verb": ([], "E_BAD_FIELD"),
    "unknown verb": (["frobnicate"], "E_BAD_FIELD"),
    "unknown global flag": (["--bogus", "status"], "E_BAD_FIELD"),
    # up
    "up: unknown flag": (["up", "--bogus"], "E_BAD_FIELD"),
    "up: --ec without parity": (["up", "--data-dir", "{fresh}", "--ec", "3"], "E_BAD_FIELD"),
    "up: --ec with k = 0": (["up", "--data-dir", "{fresh}", "--ec", "0+1"], "E_BAD_FIELD"),
    "up: --ec past the limits": (["up", "--data-dir", "{fresh}", "--ec", "200+2"], "E_BAD_FIELD"),
    "up: negative agents": (["up", "--data-dir", "{fresh}", "--agents", "-2"], "E_BAD_FIELD"),
    "up: agents not a number": (["up", "--data-dir", "{fresh}", "--agents", "many"], "E_BAD_FIELD"),
    "up: negative capacity": (["up", "--data-dir", "{fresh}", "--capacity-bytes", "-1"], "E_BAD_FIELD"),
    "up: bad durability": (["up", "--data-dir", "{fresh}", "--durability", "sometimes"], "E_BAD_FIELD"),
    "up: data dir is a file": (["up", "--data-dir", "{file}/sub", "--agents", "1", "--ec", "1+0"], "E_LOCAL_FILE"),
    "up: a controller endpoint": (["--cluster", "{closed}", "up"], "E_BAD_FIELD"),
    # down
    "down: unknown flag": (["down", "--bogus"], "E_BAD_FIELD"),
    "down: a controller endpoint": (["--cluster", "{closed}", "down"], "E_BAD_FIELD"),
    "down: no cluster there": (["--cluster", "{nowhere}", "down"], "E_NO_CLUSTER"),
    # status
    "status: unknown flag": (["status", "--bogus"], "E_BAD_FIELD"),
    "status: no cluster there": (["--cluster", "{nowhere}", "status"], "E_NO_CLUSTER"),
    "status: a directory without a cluster": (["--cluster", "{empty_dir}", "status"], "E_NO_CLUSTER"),
    "status: no controller at the endpoint": (["--cluster", "{closed}", "status"], "E_NO_CLUSTER"),
    "status: endpoint without a port": (["--cluster", "tcp://127.0.0.1", "status"], "E_BAD_FIELD"),
    "status: endpoint port out of range": (["--cluster", "tcp://127.0.0.1:99999", "status"], "E_BAD_FIELD"),
    "status: not a tcp URL": (["--cluster", "http://127.0.0.1:80", "status"], "E_BAD_FIELD"),
    # node
    "node: unknown action": (["node", "explode", "n1"], "E_BAD_FIELD"),
    "node: no node named": (["node", "drain"], "E_BAD_FIELD"),
    "node: unknown node": (["node", "drain", "n99"], "E_NOT_FOUND"),
    "node: negative timeout": (["node", "drain", "n1", "--wait", "--timeout", "-5"], "E_BAD_FIELD"),
    "node: no controller at the endpoint": (["--cluster", "{closed}", "node", "drain", "n1"], "E_NO_CONTROLLER"),
    "node: no cluster there": (["--cluster", "{nowhere}", "node", "resume", "n1"], "E_NO_CLUSTER"),
    # repair and scrub
    "repair: unknown flag": (["repair", "--bogus"], "E_BAD_FIELD"),
    "repair: timeout not a number": (["repair", "--timeout", "soon"], "E_BAD_FIELD"),
    "repair: no cluster there": (["--cluster", "{nowhere}", "repair"], "E_NO_CLUSTER"),
    "scrub: zero timeout": (["scrub", "--timeout", "0"], "E_BAD_FIELD"),
    "scrub: no controller at the endpoint": (["--cluster", "{closed}", "scrub"], "E_NO_CLUSTER"),
    # put
    "put: nothing to put": (["put"], "E_BAD_FIELD"),
    "put: no such local file": (["put", "{nowhere}", f"hcstore://{BUCKET}/k"], "E_LOCAL_FILE"),
    "put: a directory as the local file": (["put", "{empty_dir}", f"hcstore://{BUCKET}/k"], "E_LOCAL_FILE"),
    "put: bad bucket": (["put", "{file}", "hcstore://BAD/k"], "E_BAD_FIELD"),
    "put: no key": (["put", "{file}", f"hcstore://{BUCKET}/"], "E_BAD_FIELD"),
    "put: --ec without parity": (["put", "--ec", "3", "{file}", f"hcstore://{BUCKET}/k"], "E_BAD_FIELD"),
    "put: --ec with k = 0": (["put", "--ec", "0+1", "{file}", f"hcstore://{BUCKET}/k"], "E_BAD_FIELD"),
    "put: no cluster there": (["--cluster", "{nowhere}", "put", "{file}", f"hcstore://{BUCKET}/k"], "E_NO_CLUSTER"),
    # get
    "get: no such object": (["get", f"hcstore://{BUCKET}/missing", "-"], "E_NOT_FOUND"),
    "get: no key": (["get", "notaurl", "-"], "E_BAD_FIELD"),
    "get: bad bucket": (["get", "hcstore://BAD/key", "-"], "E_BAD_FIELD"),
    "get: into a missing directory": (["get", f"hcstore://{BUCKET}/stored", "{nowhere}/x"], "E_LOCAL_FILE"),
    "get: no local target": (["get", f"hcstore://{BUCKET}/stored"], "E_BAD_FIELD"),
    # ls, rm, stat
    "ls: bucket too short": (["ls", "hcstore://x"], "E_BAD_FIELD"),
    "ls: two URLs": (["ls", f"hcstore://{BUCKET}/", f"hcstore://{BUCKET}/a"], "E_BAD_FIELD"),
    "ls: no cluster there": (["--cluster", "{nowhere}", "ls"], "E_NO_CLUSTER"),
    "rm: no such object": (["rm", f"hcstore://{BUCKET}/missing"], "E_NOT_FOUND"),
    "rm: nothing named": (["rm"], "E_BAD_FIELD"),
    "stat: bad bucket": (["stat", "hcstore://BAD/x"], "E_BAD_FIELD"),
    "stat: unknown flag": (["stat", "--bogus", f"hcstore://{BUCKET}/stored"], "E_BAD_FIELD"),
    # demo and bench
    "demo: --ec without parity": (["demo", "--ec", "3"], "E_BAD_FIELD"),
    "demo: negative size": (["demo", "--size-mb", "-1"], "E_BAD_FIELD"),
    "demo: fewer agents than fragments": (["demo", "--agents", "2"], "E_BAD_FIELD"),
    "bench: --ec with k = 0": (["bench", "--ec", "0+1"], "E_BAD_FIELD"),
    "bench: zero size": (["bench", "--size-mb", "0"], "E_BAD_FIELD"),
    "bench: fewer agents than fragments": (["bench", "--agents", "3", "--quick"], "E_BAD_FIELD"),
    "bench: negative repair size": (["bench", "--repair", "--repair-node-mb", "-1"], "E_BAD_FIELD"),
    "bench: negative repair rate": (["bench", "--repair", "--repair-rate", "-1"], "E_BAD_FIELD"),
    "bench: repair rate not a number": (["bench", "--repair", "--repair-rate", "fast"], "E_BAD_FIELD"),
    # ray
    "ray: unknown action": (["ray", "explode"], "E_BAD_FIELD"),
    "ray: --ec without parity": (["ray", "deploy", "--ec", "3"], "E_BAD_FIELD"),
}


@pytest.fixture(scope="module")
def places(shared_cluster, shared_client, tmp_path_factory):
    """Paths and endpoints the cases name, and the environment they run in (the shared cluster)."""
    root = tmp_path_factory.mktemp("cli-errors")
    (root / "file.bin").write_bytes(seeded_bytes("file", 1000))
    (root / "empty").mkdir()
    shared_client.put(BUCKET, "stored", seeded_bytes("stored", 5000))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    names = {
        "file": str(root / "file.bin"),
        "empty_dir": str(root / "empty"),
        "nowhere": str(root / "nowhere"),
        "fresh": str(root / "fresh"),
        "closed": closed,
    }
    return names, clean_env(root, HCSTORE_CLUSTER=str(shared_cluster.path), **key_env(shared_cluster))


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_with_its_code(places, case):
    names, env = places
    args, code = BAD_INPUT[case]
    proc = run_cli(*(arg.format(**names) for arg in args), env=env)
    message = one_line_error(proc, f"({code})")
    assert message.startswith("error (E_"), message


def test_a_bad_codec_setting_is_reported_by_name(places):
    names, env = places
    message = one_line_error(
        run_cli("put", names["file"], f"hcstore://{BUCKET}/codec", env={**env, "HCSTORE_CODEC": "no-such-codec"}),
        "(E_CODEC)",
    )
    assert "no-such-codec" in message


def test_verbs_reach_the_cluster_through_its_controller(make_cluster, tmp_path):
    cluster = make_cluster(agents=4, ec="2+1")
    controller = cluster.controller_endpoint()
    env = clean_env(tmp_path)  # no HCSTORE_CLUSTER, no pointer: only --cluster
    one_line_error(run_cli("--cluster", controller, "ls", env=env), "(E_AUTH)", "HCSTORE_KEY")  # no key: told how
    env.update(key_env(cluster))

    def cli(*args: str) -> bytes:
        return cli_ok(run_cli("--cluster", controller, *args, env=env, timeout=120)).stdout

    data = seeded_bytes("tcp", 300_001)
    (tmp_path / "in.bin").write_bytes(data)
    cli("put", str(tmp_path / "in.bin"), "hcstore://viatcp/dir/obj")
    assert cli("get", "hcstore://viatcp/dir/obj", "-") == data
    assert "hcstore://viatcp/" in cli("ls").decode().split()
    assert cli("ls", "hcstore://viatcp/dir/").decode().split()[-1] == "hcstore://viatcp/dir/obj"
    assert json.loads(cli("stat", "--json", "hcstore://viatcp/dir/obj"))["k"] == 2  # the cluster's EC

    status = json.loads(cli("status", "--json"))
    assert (status["cluster"], status["ec"]) == (controller, "2+1")
    assert [(n["id"], n["state"]) for n in status["nodes"]] == [(f"n{i}", "alive") for i in range(1, 5)]

    cli("node", "drain", "n4")
    wait_until(
        lambda: {n["id"]: n["map_state"] for n in json.loads(cli("status", "--json"))["nodes"]}["n4"] == "draining",
        timeout=10,
        what="n4 to be draining",
    )
    cli("node", "resume", "n4")
    wait_until(
        lambda: {n["id"]: n["map_state"] for n in json.loads(cli("status", "--json"))["nodes"]}["n4"] == "alive",
        timeout=10,
        what="n4 back in service",
    )

    assert b"repair pass done" in cli("repair", "--timeout", "60")
    assert b"scrub done" in cli("scrub", "--timeout", "60")
    cli("rm", "hcstore://viatcp/dir/obj")
    one_line_error(run_cli("--cluster", controller, "get", "hcstore://viatcp/dir/obj", "-", env=env), "E_NOT_FOUND")
