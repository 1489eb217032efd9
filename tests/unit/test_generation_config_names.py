"""Generations (hybrid logical clock), configuration precedence, names and URLs."""

from __future__ import annotations

import pickle
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hcstore.config import AgentConfig, ClientConfig
from hcstore.errors import InvalidRequest
from hcstore.generation import Generation, HybridClock, is_generation
from hcstore.names import check_bucket, check_key, check_meta, check_prefix, parse_url


def test_clock_is_strictly_increasing_across_threads():
    clock = HybridClock("0000abcd")
    seen: list[str] = []
    lock = threading.Lock()

    def work():
        mine = [clock.now() for _ in range(2000)]
        with lock:
            seen.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == len(seen) == 8000
    assert all(is_generation(g) for g in seen)


def test_string_order_is_clock_order_and_observe_moves_past():
    a, b = HybridClock("aaaaaaaa"), HybridClock("bbbbbbbb")
    future = str(Generation(a._last.wall_ns + 10**15, 5, "cccccccc"))
    b.observe(future)
    assert b.now() > future
    assert Generation.parse(future).counter == 5


@settings(derandomize=True, max_examples=200)
@given(st.integers(0, 10**19 - 1), st.integers(0, 9999), st.integers(0, 10**19 - 1), st.integers(0, 9999))
def test_generation_strings_sort_like_tuples(w1, c1, w2, c2):
    g1, g2 = Generation(w1, c1, "00000001"), Generation(w2, c2, "00000001")
    assert (str(g1) < str(g2)) == (g1 < g2)
    assert Generation.parse(str(g1)) == g1


@pytest.mark.parametrize("bad", ["", "1-2-3", "0000000000000000001-0000-ABCDEF00", None, 5])
def test_bad_generations_are_rejected(bad):
    assert not is_generation(bad)
    with pytest.raises(ValueError):
        Generation.parse(bad)


def test_config_precedence_argument_env_default(monkeypatch):
    assert ClientConfig.default().ec == "4+2"
    monkeypatch.setenv("HCSTORE_EC", "8+2")
    monkeypatch.setenv("HCSTORE_CHUNK_SIZE", "65536")
    config = ClientConfig.from_env()
    assert (config.ec, config.chunk_size) == ("8+2", 65536)
    assert ClientConfig.from_env(ec="10+4").ec == "10+4"
    assert pickle.loads(pickle.dumps(config)) == config


@pytest.mark.parametrize(
    "setting, value, name",
    [
        ("ec", "4-2", "ec"),
        ("chunk_size", 100, "chunk_size"),
        ("window", 0, "window"),
        ("request_timeout", -1.0, "request_timeout"),
    ],
)
def test_bad_client_settings_name_the_setting(setting, value, name):
    with pytest.raises(InvalidRequest, match=name):
        ClientConfig(**{setting: value})


def test_bad_env_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("HCSTORE_WINDOW", "lots")
    with pytest.raises(InvalidRequest, match="HCSTORE_WINDOW"):
        ClientConfig.from_env()
    with pytest.raises(InvalidRequest, match="unknown"):
        ClientConfig.from_env(windw=3)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"durability": "sometimes"}, "durability"),
        ({"high_watermark": 1.5}, "high_watermark"),
        ({"port": 70000}, "port"),
        ({"capacity_bytes": -1}, "capacity_bytes"),
        ({"node_id": ""}, "node_id"),
    ],
)
def test_bad_agent_settings(kwargs, name):
    with pytest.raises(InvalidRequest, match=name):
        AgentConfig(**kwargs)


def test_names_and_urls():
    assert parse_url("hcstore://ckpt/step-1/model.pt") == ("ckpt", "step-1/model.pt")
    assert parse_url("ckpt/a") == ("ckpt", "a")
    assert parse_url("hcstore://ckpt", key_required=False) == ("ckpt", "")
    for bad in ("UPPER", "a", "-x-", "has space", "x" * 64):
        with pytest.raises(InvalidRequest, match="bucket"):
            check_bucket(bad)
    for bad in ("", "a\x00b", "k" * 1025):
        with pytest.raises(InvalidRequest, match="key"):
            check_key(bad)
    with pytest.raises(InvalidRequest):
        parse_url("hcstore://ckpt/")


def test_text_with_a_lone_surrogate_is_refused_as_invalid():
    for bad in ("a\udc80b", "\ud800", "é" * 600 + "\udcff"):
        with pytest.raises(InvalidRequest, match="lone surrogate"):
            check_key(bad)
        with pytest.raises(InvalidRequest, match="lone surrogate"):
            check_prefix(bad)
        with pytest.raises(InvalidRequest, match="lone surrogate"):
            check_meta({"note": bad})
        with pytest.raises(InvalidRequest, match="lone surrogate"):
            check_meta({bad: "v"})
        with pytest.raises(InvalidRequest, match="lone surrogate"):
            parse_url(f"hcstore://ckpt/{bad}")
    assert check_key("é" * 512) == "é" * 512  # 1024 bytes of valid UTF-8
    with pytest.raises(InvalidRequest, match="1026 bytes"):
        check_key("é" * 513)
    assert check_meta(None) == {} and check_meta({"a": "b"}) == {"a": "b"}
    with pytest.raises(InvalidRequest, match="strings"):
        check_meta({"a": 1})
