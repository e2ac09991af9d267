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
