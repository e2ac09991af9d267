"""Teacher cache: keys, hits/misses, failures never cached, sharing between runs and processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_distill.teachers.cache import CachedCompletion, TeacherCache, cache_key, resolve_cache_path
from edge_distill.teachers.live import Generation, LiveTeacher, Request, Sampling


class ScriptedTeacher(LiveTeacher):
    """A backend that answers "<prompt>#<index>" and fails prompts starting with "bad"."""

    backend = "scripted"

    def __init__(self, **kw: object):
        super().__init__("m", progress=False, **kw)  # type: ignore[arg-type]
        self.calls: list[tuple[str, int]] = []

    def _run(
        self, requests: list[Request], sampling: Sampling
    ) -> Iterator[tuple[int, list[int], list[Generation]]]:
        for ri, r in enumerate(requests):
            for i in r.indices:
                self.calls.append((r.prompt, i))
                self.stats.requests += 1
                if r.prompt.startswith("bad"):
                    yield ri, [i], [Generation.failed("http_500", "scripted")]
                else:
                    finish = "length" if r.prompt.startswith("long") else "stop"
                    yield ri, [i], [Generation(f"{r.prompt}#{i}", finish, tokens=3)]


S = Sampling(temperature=0.7, top_p=0.9, max_tokens=32, stop=("\n",), seed=1)


def test_key_changes_with_every_component() -> None:
    base = cache_key("http", "m", "p", S.key(), 0)
    assert base == cache_key("http", "m", "p", Sampling(0.7, 0.9, 32, ("\n",), 1).key(), 0)
    others = [
        cache_key("llamacpp", "m", "p", S.key(), 0),
        cache_key("http", "m2", "p", S.key(), 0),
        cache_key("http", "m", "p2", S.key(), 0),
        cache_key("http", "m", "p", S.key(), 1),
        *(
            cache_key("http", "m", "p", Sampling(**{**S.key(), field: value}).key(), 0)
            for field, value in [
                ("temperature", 0.5),
                ("top_p", 1.0),
                ("max_tokens", 8),
                ("stop", ()),
                ("seed", 2),
            ]
        ),
    ]
    assert len({base, *others}) == len(others) + 1


def test_resolve_cache_path(tmp_path: Path) -> None:
    assert resolve_cache_path(None) is None
    assert resolve_cache_path("auto") == Path("~/.cache/edge-distill/teacher.sqlite").expanduser()
    assert resolve_cache_path(tmp_path / "c.sqlite") == tmp_path / "c.sqlite"


def test_rerun_pays_only_for_what_is_missing_and_failures_are_retried(tmp_path: Path) -> None:
    path = tmp_path / "teacher.sqlite"
    first = ScriptedTeacher(cache=path)
    out = first.complete(["a", "bad", "long"], 2, S)
    assert [[c.text for c in row] for row in out] == [["a#0", "a#1"], ["", ""], ["long#0", "long#1"]]
    assert [c.finish_reason for c in out[1]] == ["error", "error"] and out[1][0].error == "http_500: scripted"
    r = first.report()
    assert (r["cache_hits"], r["cache_misses"], r["completions"], r["truncated"]) == (0, 6, 4, 2)
    assert r["faults"] == {"http_500": 2} and r["cache"]["entries"] == 4
    first.close()

    second = ScriptedTeacher(cache=path)  # a new run sharing the cache file
    out2 = second.complete(["a", "bad", "long", "new"], 2, S)
    assert sorted(second.calls) == [("bad", 0), ("bad", 1), ("new", 0), ("new", 1)]
    assert [c.cached for c in out2[0]] == [True, True] and out2[0][0].text == "a#0"
    assert second.report()["cache_hits"] == 4 and second.report()["cache_misses"] == 4
    assert second.cache is not None and second.cache.fault_counts() == {"http_500": 4}

    third = ScriptedTeacher(cache=path)
    third.complete(["a", "long", "new"], 2, S)
    third.complete(["a"], 2, Sampling(temperature=0.7, top_p=0.9, max_tokens=32, stop=("\n",), seed=1))
    assert third.calls == [] and third.stats.requests == 0


def test_greedy_asks_once_per_prompt_and_no_cache_works(tmp_path: Path) -> None:
    t = ScriptedTeacher(cache=None)
    out = t.complete(["a", "b"], 3, Sampling(temperature=0.0))
    assert t.calls == [("a", 0), ("b", 0)]
    assert [[c.text for c in row] for row in out] == [["a#0"] * 3, ["b#0"] * 3]
    out[0][0].text = "changed"  # the K copies are distinct objects
    assert out[0][1].text == "a#0"


_WRITER = """
import sys
from edge_distill.teachers.cache import CachedCompletion, TeacherCache
c = TeacherCache(sys.argv[1])
for i in range(200):
    c.put_many("b", "m", [(f"{sys.argv[2]}-{i}", 0, CachedCompletion("x" * 100, "stop", 5))])
    c.get_many([f"{sys.argv[2]}-{i}"])
"""


def test_concurrent_writers_in_separate_processes(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    TeacherCache(path).close()
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), tag]) for tag in ("p1", "p2", "p3")]
    local = TeacherCache(path)
    for i in range(100):  # and this process writes at the same time
        local.put_many("b", "m", [(f"main-{i}", 0, CachedCompletion("y", "length", None))])
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert len(local) == 700
    found = local.get_many(["p1-0", "p3-199", "main-5", "absent"])
    assert found["main-5"] == CachedCompletion("y", "length", None) and len(found) == 3
    assert (local.hits, local.misses) == (3, 1)
    mode = local._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


@pytest.mark.parametrize("k", [1, 4])
def test_every_prompt_gets_exactly_k(tmp_path: Path, k: int) -> None:
    out = ScriptedTeacher(cache=tmp_path / "c.sqlite").complete(["x", "y", "bad"], k, S)
    assert [len(row) for row in out] == [k, k, k]


def test_a_prompt_repeated_in_one_call_is_asked_once() -> None:
    t = ScriptedTeacher(cache=None)
    out = t.complete(["a", "b", "a"], 2, S)
    assert sorted(t.calls) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert [c.text for c in out[2]] == ["a#0", "a#1"] and out[2][0] is not out[0][0]


# ------------------------------------------------------------------ teacher identity in the key
def test_base_url_normalisation() -> None:
    from edge_distill.teachers.http import normalise_base_url

    same = [
        "http://127.0.0.1:8000/v1",
        "HTTP://127.0.0.1:8000/v1/",
        "http://user:secret@127.0.0.1:8000/v1?api-version=1#frag",
        " http://127.0.0.1:8000/v1 ",
    ]
    assert {normalise_base_url(u) for u in same} == {"http://127.0.0.1:8000/v1"}
    assert normalise_base_url("https://API.Example.com/v1") == "https://api.example.com:443/v1"
    assert normalise_base_url("http://Example.com/v1") == normalise_base_url("http://example.com:80/v1")
    others = ["https://127.0.0.1:8000/v1", "http://127.0.0.1:8001/v1", "http://127.0.0.2:8000/v1",
              "http://127.0.0.1:8000/v2", "http://127.0.0.1:8000", "http://[::1]:8000/v1"]  # fmt: skip
    assert len({normalise_base_url(u) for u in [same[0], *others]}) == len(others) + 1


def test_two_servers_with_one_model_name_do_not_share_answers(tmp_path: Path) -> None:
    from fake_openai import FakeOpenAI

    from edge_distill.teachers.http import HttpTeacher

    cache = TeacherCache(tmp_path / "shared.sqlite")
    kw = dict(timeout_s=2.0, max_retries=0, concurrency=1, progress=False, cache=cache)
    with FakeOpenAI() as first, FakeOpenAI() as second:
        a = HttpTeacher("same-model", base_url=first.url, **kw).complete(["p"], 2, S)  # type: ignore[arg-type]
        b = HttpTeacher("same-model", base_url=second.url + "/", **kw).complete(["p"], 2, S)  # type: ignore[arg-type]
        assert len(first.log) == 2 and len(second.log) == 2  # the second server was asked, not the cache
        assert not any(c.cached for c in b[0]) and [c.text for c in a[0]] == [c.text for c in b[0]]
        again = HttpTeacher("same-model", base_url="HTTP" + first.url[4:] + "/", **kw)  # type: ignore[arg-type]
        assert all(c.cached for c in again.complete(["p"], 2, S)[0]) and len(first.log) == 2


def test_entries_of_the_previous_key_format_are_never_served(tmp_path: Path) -> None:
    """v1 keys hashed (backend variant, model, prompt, sampling, index) with no server in them: a v1 entry
    may hold another server's answer, so the v2 key must not find it."""
    import hashlib
    import json

    v1_blob = {"backend": "scripted", "model": "m", "prompt": "a", "sampling": S.key(), "index": 0}
    v1_key = hashlib.sha256(json.dumps(v1_blob, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    path = tmp_path / "old.sqlite"
    old = TeacherCache(path)
    old.put_many("scripted", "m", [(v1_key, 0, CachedCompletion("WRONG SERVER", "stop", 1))])
    old.close()
    t = ScriptedTeacher(cache=path)
    out = t.complete(["a"], 1, S)
    assert out[0][0].text == "a#0" and t.calls == [("a", 0)]
    assert cache_key("scripted", "m", "a", S.key(), 0) != v1_key


def _gguf(path: Path, size: int, *, head: bytes = b"GGUF", fill: int = 0) -> Path:
    path.write_bytes(head + bytes([fill]) * (size - len(head)))
    return path


def test_gguf_identity_follows_content_not_path_or_mtime(tmp_path: Path) -> None:
    import os
    import shutil

    from edge_distill.teachers.llamacpp import HEAD_BYTES, LlamaCppTeacher, gguf_identity

    size = HEAD_BYTES + (8 << 20)
    a = _gguf(tmp_path / "a.gguf", size)
    ident = gguf_identity(a)
    shutil.copy(a, tmp_path / "copy.gguf")
    assert gguf_identity(tmp_path / "copy.gguf") == ident  # moving or copying keeps the cache
    # a re-export in place: same size, same header, other tensor data, mtime restored
    st = a.stat()
    with open(a, "r+b") as f:
        f.seek(HEAD_BYTES + (4 << 20))
        f.write(b"\x01" * (1 << 20))
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert gguf_identity(a) != ident
    assert gguf_identity(_gguf(tmp_path / "small.gguf", 1000)) != gguf_identity(
        _gguf(tmp_path / "s2.gguf", 1001)
    )
    t1 = LlamaCppTeacher(str(a), cache=None, progress=False)
    t2 = LlamaCppTeacher(str(tmp_path / "copy.gguf"), cache=None, progress=False)
    assert t1.cache_variant() != t2.cache_variant() and t1.cache_variant().startswith("llamacpp@")


# ------------------------------------------------------------------ a corrupt cache file
def _populated(path: Path, n: int = 3000) -> Path:
    c = TeacherCache(path)
    c.put_many("b", "m", [(f"k{i}", 0, CachedCompletion("x" * 200, "stop", 5)) for i in range(n)])
    c.close()
    return path


@pytest.mark.parametrize("damage", ["garbage", "half", "header_only", "directory", "zero"])
def test_a_corrupt_cache_warns_once_and_the_run_goes_on_uncached(
    damage: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "teacher.sqlite"
    if damage == "garbage":
        path.write_bytes(bytes(range(256)) * 64)
    elif damage in ("half", "header_only"):
        data = _populated(path).read_bytes()
        for side in ("-wal", "-shm"):
            Path(str(path) + side).unlink(missing_ok=True)
        path.write_bytes(data[: len(data) // 2] if damage == "half" else data[:100])
    elif damage == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"")
    before = path.read_bytes() if path.is_file() else None
    with caplog.at_level("WARNING", logger="edge_distill.teachers.cache"):
        t = ScriptedTeacher(cache=path)
        out = t.complete(["a", "b"], 2, S)
        out2 = t.complete(["a", "c"], 2, S)
    assert [c.text for c in out[0] + out2[1]] == ["a#0", "a#1", "c#0", "c#1"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    if damage == "zero":  # an empty file is a valid empty SQLite database: nothing to warn about
        assert warnings == [] and t.cache is not None and t.cache.broken is None
        assert t.report()["cache"]["entries"] == 6
        return
    assert len(warnings) == 1, warnings
    assert (
        str(path) in warnings[0]
        and "running without a cache" in warnings[0]
        and "move it away" in warnings[0]
    )
    assert t.report()["cache"]["disabled"] and t.stats.cache_hits == 0 and len(t.calls) == 8
    if before is not None:
        assert path.read_bytes() == before  # the user's file is never rewritten or truncated
