"""Limits kept per peer: who a peer is (peer_of), what one peer's open uploads may hold (PeerLimits, the
store's accounting), the short TTL of an upload that never wrote, and fragment files that lie about their size."""

from __future__ import annotations

import dataclasses
import os
import struct

import blake3
import msgpack
import pytest
import zmq
import zmq.auth
from test_store import CHUNK, gen, write_fragment
from zmq.auth.thread import ThreadAuthenticator

from ec import DATA_OFFSET, FOOTER_MAGIC, FOOTER_SIZE, FragmentHeader, header_to_dict, parse_fragment
from hcstore.config import AgentConfig
from hcstore.errors import AgentBusy, CorruptFragment, InvalidRequest, PeerLimitReached, StoreFull, UploadNotFound
from hcstore.node.peers import MAX_UPLOADS_PER_PEER, PEER_RESERVE_SHARE, PeerLimits
from hcstore.node.store import IDLE_UPLOAD_TTL, FragmentFileDamaged, LocalStore
from hcstore.wire.server import UNKNOWN_PEER, peer_of

FRAMING = DATA_OFFSET + FOOTER_SIZE
MiB = 1 << 20


# ---------------------------------------------------------------- PeerLimits (pure)


def test_defaults():
    assert PeerLimits() == PeerLimits(max_uploads=MAX_UPLOADS_PER_PEER, reserve_share=PEER_RESERVE_SHARE)
    assert (MAX_UPLOADS_PER_PEER, PEER_RESERVE_SHARE, IDLE_UPLOAD_TTL) == (1024, 0.25, 30.0)
    assert issubclass(PeerLimitReached, AgentBusy) and PeerLimitReached.code == "E_PEER_LIMIT"


@pytest.mark.parametrize("settings", [{"max_uploads": 0}, {"reserve_share": 0}, {"reserve_share": 1.5}])
def test_nonsense_limits_are_refused(settings):
    with pytest.raises(InvalidRequest):
        PeerLimits(**settings)


def test_open_uploads_are_counted_per_peer():
    limits = PeerLimits(max_uploads=3)
    for held in range(3):
        limits.admit("10.0.0.1", held)
    with pytest.raises(PeerLimitReached, match=r"node n7: peer 10\.0\.0\.1 has 3 open uploads.*limit 3 per peer"):
        limits.admit("10.0.0.1", 3, node="n7")


def test_a_reservation_within_the_share_is_granted_whole():
    assert PeerLimits().grant("p", ahead=0, want=100, least=10, room=1000) == 100
    assert PeerLimits().grant("p", ahead=100, want=150, least=10, room=900) == 150  # share 250, 100 held


def test_a_reservation_past_the_share_is_cut_to_what_is_left_of_it():
    limits = PeerLimits()
    assert limits.grant("p", ahead=0, want=1000, least=10, room=1000) == 250  # the whole room asked: a quarter
    assert limits.grant("p", ahead=200, want=1000, least=10, room=800) == 50  # share 250, 200 of it held


def test_a_peer_whose_share_is_taken_is_refused():
    with pytest.raises(PeerLimitReached, match=r"peer p holds 250 bytes reserved.*limit 25% of .* per peer: 250 bytes"):
        PeerLimits().grant("p", ahead=250, want=100, least=10, room=750)
    with pytest.raises(PeerLimitReached):  # not even its first chunk fits in what is left
        PeerLimits().grant("p", ahead=200, want=100, least=60, room=800)


def test_a_peer_holding_nothing_may_always_start_one_upload():
    # a nearly full node: a quarter of its room is less than one chunk, yet one upload may start
    assert PeerLimits().grant("p", ahead=0, want=5000, least=4000, room=6000) == 4000
    with pytest.raises(PeerLimitReached):  # but only one
        PeerLimits().grant("p", ahead=4000, want=5000, least=4000, room=2000)


# ---------------------------------------------------------------- peer_of


def _one_frame(router: zmq.Socket, dealer: zmq.Socket) -> zmq.Frame:
    dealer.send_multipart([b"header", b"payload"])
    assert router.poll(5000), "nothing arrived"
    frames = router.recv_multipart(copy=False)
    assert len(frames) == 3
    return frames[1]


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def test_peer_of_names_the_tcp_peer_address(context):
    router = context.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = context.socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.2:0;127.0.0.1:{port}")  # from another loopback address
    assert peer_of(_one_frame(router, dealer)) == "127.0.0.2"


def test_peer_of_names_the_authenticated_public_key(context):
    auth = ThreadAuthenticator(context)
    auth.start()
    try:
        auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
        server_public, server_secret = zmq.curve_keypair()
        client_public, client_secret = zmq.curve_keypair()
        router = context.socket(zmq.ROUTER)
        router.curve_server = True
        router.curve_secretkey, router.curve_publickey = server_secret, server_public
        port = router.bind_to_random_port("tcp://127.0.0.1")
        dealer = context.socket(zmq.DEALER)
        dealer.curve_serverkey = server_public
        dealer.curve_publickey, dealer.curve_secretkey = client_public, client_secret
        dealer.connect(f"tcp://127.0.0.1:{port}")
        assert peer_of(_one_frame(router, dealer)) == client_public.decode()
    finally:
        auth.stop()


def test_peer_of_without_metadata_is_unknown(context):
    router = context.socket(zmq.ROUTER)
    router.bind("inproc://peers")
    dealer = context.socket(zmq.DEALER)
    dealer.connect("inproc://peers")
    assert peer_of(_one_frame(router, dealer)) == UNKNOWN_PEER
    assert peer_of(b"header") == UNKNOWN_PEER  # a copied frame carries no metadata


# ---------------------------------------------------------------- the store's accounting


@pytest.fixture
def make_store(tmp_path):
    stores = []

    def factory(mountpaths: int = 1, **options) -> LocalStore:
        settings = {k: options.pop(k) for k in ("capacity_bytes", "high_watermark", "upload_ttl") if k in options}
        config = AgentConfig(
            node_id="n1", mountpaths=tuple(str(tmp_path / f"mp{i}") for i in range(mountpaths)), **settings
        )
        store = LocalStore(config, **options)
        stores.append(store)
        return store

    yield factory
    for store in stores:
        store.close()


def test_open_uploads_are_capped_per_peer_and_other_peers_are_not(make_store):
    store = make_store(peer_limits=PeerLimits(max_uploads=3))
    mine = [store.open_upload("bkt", f"k{i}", gen(1), 0, CHUNK, None, peer="10.0.0.1") for i in range(3)]
    with pytest.raises(PeerLimitReached, match="10.0.0.1 has 3 open uploads"):
        store.open_upload("bkt", "k3", gen(1), 0, CHUNK, None, peer="10.0.0.1")
    other = store.open_upload("bkt", "k3", gen(1), 0, CHUNK, None, peer="10.0.0.2")
    assert store.peer_usage() == {"10.0.0.1": (3, 3 * CHUNK), "10.0.0.2": (1, CHUNK)}  # bytes not written yet
    store.abort(mine[0])
    store.open_upload("bkt", "k4", gen(1), 0, CHUNK, None, peer="10.0.0.1")  # a finished one makes room
    store.abort(other)
    assert set(store.peer_usage()) == {"10.0.0.1"}


def test_one_peer_reserves_at_most_its_share_of_the_room(make_store):
    store = make_store(capacity_bytes=8 * MiB, high_watermark=1.0)
    room = store.stats()["free"]
    attack = store.open_upload("bkt", "all", gen(1), 0, CHUNK, room - FRAMING, peer="attacker")
    assert store.uploads[attack].reserved == room // 4  # it asked for everything
    assert store.stats()["free"] == room - room // 4
    with pytest.raises(PeerLimitReached, match="peer attacker holds"):
        store.open_upload("bkt", "more", gen(1), 0, CHUNK, room // 2, peer="attacker")
    # another peer still stores half the node
    upload = store.open_upload("bkt", "half", gen(1), 0, CHUNK, room // 2, peer="client")
    for stripe in range(room // 2 // CHUNK):
        store.write_chunk(upload, stripe, bytes(CHUNK))
    # the cut reservation grows as chunks arrive, like an upload that declared nothing
    for stripe in range(room // 4 // CHUNK + 2):
        store.write_chunk(attack, stripe, bytes(CHUNK))
    assert store.uploads[attack].reserved == FRAMING + (room // 4 // CHUNK + 2) * CHUNK
    store.abort(attack)
    store.abort(upload)
    assert store.stats()["free"] == room and store.peer_usage() == {}


def test_an_upload_that_outgrows_a_cut_reservation_still_meets_store_full(make_store):
    store = make_store(capacity_bytes=64 * CHUNK, high_watermark=1.0)
    upload = store.open_upload("bkt", "big", gen(1), 0, CHUNK, 60 * CHUNK, peer="p")
    assert store.uploads[upload].reserved < 60 * CHUNK
    store.open_upload("bkt", "other", gen(1), 0, CHUNK, 40 * CHUNK, peer="q")  # takes the room the cut left
    with pytest.raises(StoreFull):
        for stripe in range(60):
            store.write_chunk(upload, stripe, bytes(CHUNK))
    assert upload not in store.uploads


def test_a_store_message_is_not_held_to_the_reservation_share(make_store):
    store = make_store(capacity_bytes=64 * CHUNK, high_watermark=1.0)
    upload = store.open_upload("bkt", "whole", gen(1), 0, CHUNK, 40 * CHUNK, peer="p", reserve_ahead=False)
    assert store.uploads[upload].reserved == FRAMING + 40 * CHUNK  # its chunks came with the request


def test_an_upload_that_never_writes_expires_after_the_idle_ttl(make_store):
    store = make_store(idle_upload_ttl=2.0, upload_ttl=600.0)
    idle = store.open_upload("bkt", "idle", gen(1), 0, CHUNK, 4 * CHUNK, peer="p")
    busy = store.open_upload("bkt", "busy", gen(1), 0, CHUNK, 4 * CHUNK, peer="p")
    store.write_chunk(busy, 0, bytes(CHUNK))
    opened = store.uploads[idle].opened
    assert store.expire_uploads(now=opened + 1.0) == 0
    assert store.expire_uploads(now=opened + 3.0) == 1  # the idle one; the one that wrote keeps upload_ttl
    assert set(store.uploads) == {busy}
    with pytest.raises(UploadNotFound):
        store.write_chunk(idle, 0, bytes(CHUNK))
    assert store.expire_uploads(now=store.uploads[busy].touched + 601) == 1
    assert not store.uploads and store.peer_usage() == {} and store.mountpaths[0].reserved == 0


def test_refused_writes_do_not_keep_an_upload_alive(make_store):
    store = make_store(idle_upload_ttl=2.0)
    upload = store.open_upload("bkt", "a", gen(1), 0, CHUNK, None, peer="p")
    opened = store.uploads[upload].opened
    with pytest.raises(InvalidRequest):
        store.write_chunk(upload, 5, bytes(CHUNK))  # out of order: refused, and no progress
    assert store.expire_uploads(now=opened + 3.0) == 1


def test_running_out_of_file_descriptors_is_busy_not_a_disk_fault(make_store):
    import resource

    store = make_store()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
        with pytest.raises(AgentBusy, match="overloaded") as refused:
            for i in range(64):
                held.append(store.open_upload("bkt", f"k{i}", gen(1), 0, CHUNK, None))
        assert refused.type is AgentBusy
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert not store.disabled and store.mountpaths[0].io_errors == 0
    for upload in held:
        store.abort(upload)
    write_fragment(store, "after", gen(1))


# ---------------------------------------------------------------- fragment files that lie


def _rewrite_trailer(path, **changes) -> None:
    """Replace a fragment file's trailer with one of other values whose footer still points where the old one
    began, checksums and all: a file whose trailer does not describe it."""
    header, data = parse_fragment(path.read_bytes())
    forged = dataclasses.replace(header, **changes)
    trailer = msgpack.packb(header_to_dict(forged), use_bin_type=True)
    footer = struct.pack(
        "<QI32s4s", DATA_OFFSET + len(data), len(trailer), blake3.blake3(trailer).digest(), FOOTER_MAGIC
    )
    tmp = path.with_suffix(".forged")
    tmp.write_bytes(path.read_bytes()[:DATA_OFFSET] + bytes(data) + trailer + footer)
    os.replace(tmp, path)


def test_a_trailer_that_does_not_describe_its_file_is_corrupt(make_store):
    store = make_store()
    write_fragment(store, "a", gen(1), stripes=4)
    path, header = store.header("bkt", "a", gen(1), 0)
    _rewrite_trailer(path, stripes=3, size=3 * CHUNK * 2, digests=header.digests[: 3 * 32])
    with pytest.raises(FragmentFileDamaged, match="trailer_offset"):
        store.read_chunks("bkt", "a", gen(1), 0, 0, 1, 1 << 30)
    assert isinstance(FragmentFileDamaged("x"), CorruptFragment)


def _write(store: LocalStore, key: str, chunk_size: int, stripes: int) -> None:
    """A committed fragment of ``stripes`` zero chunks of ``chunk_size`` bytes."""
    upload = store.open_upload("bkt", key, gen(1), 0, chunk_size, stripes * chunk_size)
    for stripe in range(stripes):
        store.write_chunk(upload, stripe, bytes(chunk_size))
    header = FragmentHeader(
        bucket="bkt",
        key=key,
        generation=gen(1),
        kind="data",
        codec="zfec",
        k=2,
        m=1,
        chunk_size=chunk_size,
        size=stripes * chunk_size * 2,
        index=0,
        stripes=stripes,
        digests=bytes(32 * stripes),
        placement=("n1", "n2", "n3"),
        created_ns=1,
    )
    fields = header_to_dict(header)
    del fields["digests"]
    store.prepare(upload, fields)
    store.commit("bkt", key, gen(1), 0)


@pytest.mark.parametrize("chunk_size", [CHUNK, 256 << 10], ids=["read", "mapped"])
def test_a_fragment_truncated_behind_the_store_is_corrupt(make_store, chunk_size):
    store = make_store()
    _write(store, "a", chunk_size, stripes=4)
    _, chunks = store.read_chunks("bkt", "a", gen(1), 0, 0, 4, 1 << 30)  # its header is cached now
    assert [bytes(c) for c in chunks] == [bytes(chunk_size)] * 4
    del chunks  # views of a mapping: touching them once the file is cut would be a bus error
    path, _ = store.header("bkt", "a", gen(1), 0)
    os.truncate(path, DATA_OFFSET + chunk_size + 10)
    with pytest.raises(FragmentFileDamaged):
        store.read_chunks("bkt", "a", gen(1), 0, 0, 4, 1 << 30)
    assert not store.disabled
