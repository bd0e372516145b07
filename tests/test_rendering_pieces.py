"""The body kept as compressed pieces: gzip assembled without recompressing, segments reused.

Whatever is reused from the last render, every variant must be byte for byte what a fresh
renderer makes of the same trackers, and the gzip variants must decode with any gzip reader.
"""

from __future__ import annotations

import gzip
import random
import zlib
from typing import Any

import pytest
from factories import api_job
from hypothesis import given
from hypothesis import strategies as st

from exporter import rendering
from exporter.jobs import parse_job
from exporter.rendering import (
    Renderer,
    crc_combine,
    deflate,
    gzip_pieces,
    inflate_chunks,
    inflate_pieces,
)
from exporter.selfmetrics import ExporterMetrics
from exporter.tracker import JobTracker

T0 = 1_776_000_000.0


@given(st.binary(max_size=300), st.binary(max_size=70_000))
def test_crc_combine_is_the_crc_of_the_concatenation(a: bytes, b: bytes) -> None:
    assert crc_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


# The pieces are compressed with ISA-L where it is installed, else with zlib: both must
# make the same stream, and a mix of them too (a render reuses older pieces).
CODECS = [zlib, *([rendering.codec] if rendering.codec is not zlib else [])]


@given(
    st.lists(st.tuples(st.binary(max_size=2000), st.sampled_from(CODECS)), max_size=8),
    st.sampled_from(CODECS),
)
def test_pieces_make_one_gzip_member_and_inflate_back(
    given_parts: list[tuple[bytes, Any]], inflating: Any
) -> None:
    parts = [p for p, _ in given_parts]
    with pytest.MonkeyPatch.context() as patch:
        pieces = []
        for part, codec in given_parts:
            patch.setattr(rendering, "codec", codec)
            pieces.append(deflate(part))
        patch.setattr(rendering, "codec", inflating)
        assert inflate_pieces(pieces) == b"".join(parts)
    whole = b"".join(parts)
    packed = gzip_pieces(pieces)
    assert gzip.decompress(packed) == whole
    # One member, as strict readers (zlib with a gzip wrapper) expect.
    inflater = zlib.decompressobj(31)
    assert inflater.decompress(packed) == whole and inflater.eof and not inflater.unused_data


def one_shot_inflate(pieces: list[Any]) -> bytes:
    """How the plain body used to be made: the whole stream inflated in one call."""
    stream = b"".join([p.data for p in pieces if p.size] + [b"\x03\x00"])
    return zlib.decompress(stream, -15)


@given(st.lists(st.binary(max_size=5000), max_size=6), st.integers(1, 3000))
def test_pieces_inflate_in_bounded_slices_to_the_whole_text(parts: list[bytes], limit: int) -> None:
    pieces = [deflate(part) for part in parts]
    chunks = list(inflate_chunks(pieces, limit))
    assert all(0 < len(chunk) <= limit for chunk in chunks)
    # Small pieces are joined: every slice but the last is full.
    assert all(len(chunk) == limit for chunk in chunks[:-1])
    assert b"".join(chunks) == b"".join(parts) == one_shot_inflate(pieces)


def test_the_fast_codec_is_there_where_it_has_wheels() -> None:
    import platform

    if platform.machine() in ("x86_64", "aarch64", "AMD64", "arm64"):
        assert rendering.codec is not zlib, "isal is a dependency on this platform"


def raw_job(n: int, **fields: Any) -> dict[str, Any]:
    base = {
        "cmd": "org.apache.cloudstack.api.command.user.vm.StartVMCmd",
        "jobinstanceid": f"vm-{n}",
        "accountid": "acct",
        "userid": "user",
    }
    return api_job(f"00000000-0000-4000-8000-{n:012d}", **{**base, **fields})


def make() -> tuple[ExporterMetrics, dict[str, JobTracker], Renderer]:
    metrics = ExporterMetrics()
    trackers = {
        cloud: JobTracker(
            cloud, metrics.cloud(cloud), retention=3600, max_jobs=10_000, watermark=T0
        )
        for cloud in ("a", "b")
    }
    return metrics, trackers, Renderer(metrics, trackers)


def test_reused_segments_give_the_bytes_of_a_fresh_render() -> None:
    metrics, trackers, renderer = make()
    rng = random.Random(7)
    now = T0 + 100
    for n in range(3000):
        trackers["a" if n % 3 else "b"].apply(parse_job(raw_job(n)), now)
    renderer.render()
    for step in range(4):
        now += 15
        for _ in range(40):  # progress, finishes, newcomers, purges: a few segments change
            n = rng.randrange(3500)
            tracker = trackers["a" if n % 3 else "b"]
            choice = rng.random()
            if choice < 0.4:
                tracker.apply(parse_job(raw_job(n, jobprocstatus=step + 1)), now)
            elif choice < 0.7:
                finished = raw_job(
                    n, jobstatus=2, jobresultcode=530, completed=f"2026-04-13T10:0{step}:00+0000"
                )
                tracker.apply(parse_job(finished), now)
            else:
                tracker.not_found(raw_job(n)["jobid"])
        for tracker in trackers.values():
            tracker.expire(now)
        renderer.render()
        fresh = Renderer(metrics, trackers)
        fresh.render()
        for openmetrics in (False, True):
            reused = renderer.body(openmetrics, gzip=False)
            assert reused == fresh.body(openmetrics, gzip=False)
            assert gzip.decompress(renderer.body(openmetrics, gzip=True)) == reused


def test_a_reused_segment_holds_the_current_records() -> None:
    """A record replaced by an equal one (only its fingerprint moved) does not re-render
    its segment, and the cache holds the current record, not the replaced one."""
    from exporter.jobs import fingerprint

    _, trackers, renderer = make()
    entries = [raw_job(n) for n in range(50)]
    for entry in entries:
        trackers["a"].apply(parse_job(entry), T0 + 1, fingerprint(entry))
    renderer.render()
    body = renderer.body()
    job_id = entries[7]["jobid"]
    old = trackers["a"].get(job_id)
    reordered = dict(reversed(list(entries[7].items())))
    trackers["a"].apply(parse_job(reordered), T0 + 1, fingerprint(reordered))
    new = trackers["a"].get(job_id)
    assert new is not old and new == old
    renderer.render()
    assert renderer.body() == body
    held = [t for segment in renderer._segments._segments.values() for t in segment.jobs]
    assert any(t is new for t in held)
    assert not any(t is old for t in held)


@pytest.mark.parametrize("openmetrics", [False, True])
@pytest.mark.parametrize("gzip_wanted", [False, True])
def test_a_streamed_variant_is_the_whole_body_and_its_length(
    openmetrics: bool, gzip_wanted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, trackers, renderer = make()
    for n in range(2000):
        trackers["a" if n % 3 else "b"].apply(parse_job(raw_job(n)), T0 + 100)
    renderer.render()
    current = renderer._current
    assert current is not None
    pieces = current._om if openmetrics else current._text
    whole = gzip_pieces(pieces) if gzip_wanted else one_shot_inflate(list(pieces))
    monkeypatch.setattr(rendering, "INFLATE_SLICE", 4096)  # many slices, even for gzip
    body = renderer.stream(openmetrics, gzip_wanted)
    chunks = list(body.chunks())
    assert len(chunks) > 10 and all(len(chunk) <= 4096 for chunk in chunks)
    assert b"".join(chunks) == whole and body.length == len(whole)
    assert list(body.chunks()) == chunks  # a body can be written more than once
    assert renderer.body(openmetrics, gzip_wanted) == whole
    assert whole.endswith(b"# EOF\n") == (openmetrics and not gzip_wanted)


def test_plain_variants_are_not_kept_after_a_scrape() -> None:
    _, trackers, renderer = make()
    for n in range(100):
        trackers["a"].apply(parse_job(raw_job(n)), T0 + 100)
    renderer.render()
    for openmetrics in (False, True):
        b"".join(renderer.stream(openmetrics, False).chunks())
        renderer.body(openmetrics, False)
    current = renderer._current
    assert current is not None
    assert current._cache == {}
    renderer.stream(True, True)
    assert list(current._cache) == [True]  # the gzip variant asked for, only
    assert renderer._wanted == {(True, True)}
