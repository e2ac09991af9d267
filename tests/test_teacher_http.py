"""HTTP teacher against a scripted fake OpenAI server on 127.0.0.1: faults, retries, n, auth, cache."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fake_openai import FakeOpenAI

from edge_distill.errors import TeacherError
from edge_distill.teachers.cache import TeacherCache
from edge_distill.teachers.http import HttpTeacher
from edge_distill.teachers.live import Sampling
from edge_distill.teachers.llamacpp import free_port


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as f:
        yield f


def teacher(url: str, tmp_path: Any = None, **kw: Any) -> HttpTeacher:
    args: dict[str, Any] = dict(
        base_url=url, timeout_s=0.5, max_retries=2, backoff_s=0.01, concurrency=1, progress=False
    )
    args["cache"] = TeacherCache(tmp_path / "cache.sqlite") if tmp_path is not None else None
    args.update(kw)
    return HttpTeacher("fake-model", **args)


SAMPLING = Sampling(temperature=0.7, max_tokens=16, seed=10)


def test_fault_schedule_completes_retries_and_counts_each_kind(fake: FakeOpenAI, tmp_path: Any) -> None:
    # per call: ok first (a teacher whose first call fails is stopped), then every fault kind once;
    # each retryable fault is followed by a success within max_retries=2; one call exhausts its retries,
    # one gets a non-retryable 400, one hits max tokens.
    fake.schedule = ["ok", "500", "ok", "hang", "ok", "truncated", "ok", "garbage", "ok", "429", "ok",
                     "empty", "ok", "502", "502", "502", "400", "length"]  # fmt: skip
    t = teacher(fake.url, tmp_path)
    prompts = [f"q{i}" for i in range(5)]
    out = t.complete(prompts, 2, SAMPLING)
    assert [len(row) for row in out] == [2] * 5
    flat = [c for row in out for c in row]
    failed = [c for c in flat if c.finish_reason == "error"]
    assert sorted(c.error.split(":")[0] for c in failed) == ["http_400", "http_502"]
    assert sum(c.finish_reason == "length" for c in flat) == 1
    ok = [c for c in flat if c.finish_reason != "error"]
    assert len(ok) == 8 and all(c.text.startswith("echo q") for c in ok)
    r = t.report()
    assert r["faults"] == {"http_502": 1, "http_400": 1}
    assert r["retries"] == {
        "http_500": 1,
        "timeout": 1,
        "incomplete_body": 1,
        "bad_response": 2,
        "http_429": 1,
        "http_502": 2,
    }
    assert r["truncated"] == 1 and r["failed"] == 2
    assert r["requests"] == len(fake.log) == 18
    assert t.cache is not None and t.cache.fault_counts() == {"http_502": 1, "http_400": 1}

    # a re-run pays only for the two failed samples (failures are never cached), then is fully cached
    before = len(fake.log)
    again = t.complete(prompts, 2, SAMPLING)
    assert len(fake.log) - before == 2
    assert all(c.finish_reason != "error" for row in again for c in row)
    assert sum(c.cached for row in again for c in row) == 8
    before = len(fake.log)
    third = t.complete(prompts, 2, SAMPLING)
    assert len(fake.log) == before and all(c.cached for row in third for c in row)


def test_samples_get_distinct_seeds_and_a_greedy_prompt_is_asked_once(fake: FakeOpenAI) -> None:
    t = teacher(fake.url, concurrency=4)
    out = t.complete(["p"], 3, SAMPLING)
    assert sorted(r["body"]["seed"] for r in fake.log) == [10, 11, 12]
    assert len({c.text for c in out[0]}) == 3
    fake.log.clear()
    greedy = t.complete(["p", "q"], 3, Sampling(temperature=0.0, max_tokens=8))
    assert len(fake.log) == 2 and all(len({c.text for c in row}) == 1 and len(row) == 3 for row in greedy)


def test_n_is_sent_when_supported_and_a_server_that_ignores_it_is_looped(tmp_path: Any) -> None:
    with FakeOpenAI(honor_n=True) as f:
        out = teacher(f.url, supports_n=True).complete(["a", "b"], 4, SAMPLING)
        assert len(f.log) == 2 and [r["body"]["n"] for r in f.log] == [4, 4]
        assert all(len(set(c.text for c in row)) == 4 for row in out)
    with FakeOpenAI(honor_n=False) as f:
        t = teacher(f.url, supports_n=True)
        out = t.complete(["a", "b"], 4, SAMPLING)
        assert all(len(row) == 4 and len(set(c.text for c in row)) == 4 for row in out)
        assert t.supports_n is False and len(f.log) == 1 + 3 + 4  # detected on the first prompt


def test_chat_endpoint_api_key_and_extra_body(fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_TEACHER_KEY", "sk-test")
    t = teacher(fake.url, endpoint="chat", api_key_env="MY_TEACHER_KEY", extra_body={"top_k": 0})
    out = t.complete(["hello"], 1, Sampling(temperature=0.0, max_tokens=8, stop=("\n\n",)))
    req = fake.log[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-test"
    assert req["body"]["messages"] == [{"role": "user", "content": "hello"}]
    assert (
        req["body"]["stop"] == ["\n\n"] and req["body"]["top_k"] == 0 and req["body"]["model"] == "fake-model"
    )
    assert out[0][0].text.startswith("echo hello")


@pytest.mark.parametrize("status, words", [("401", "authentication failed"), ("404", "not found")])
def test_auth_and_wrong_path_stop_at_once(fake: FakeOpenAI, status: str, words: str) -> None:
    fake.schedule = [status] * 10
    with pytest.raises(TeacherError, match=words):
        teacher(fake.url, concurrency=1).complete([f"q{i}" for i in range(5)], 2, SAMPLING)
    assert len(fake.log) == 1


def test_unreachable_teacher_is_one_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    start = time.monotonic()
    with pytest.raises(TeacherError, match="is not working.*none got an answer.*connection"):
        teacher(url, concurrency=4).complete([f"q{i}" for i in range(20)], 2, SAMPLING)
    assert time.monotonic() - start < 10


def test_a_server_that_dies_mid_run_stops_the_stage(fake: FakeOpenAI, tmp_path: Any) -> None:
    fake.schedule = ["ok", "ok"] + ["503"] * 100
    t = teacher(fake.url, tmp_path, max_retries=0, give_up_after=3)
    with pytest.raises(TeacherError, match="3 call\\(s\\) in a row failed"):
        t.complete([f"q{i}" for i in range(10)], 1, SAMPLING)
    assert t.cache is not None and len(t.cache) == 2  # what was paid before the failure is kept
    assert t.report()["faults"] == {"http_503": 3} and t.cache.fault_counts() == {"http_503": 3}


def test_cli_teach_writes_samples_and_a_rerun_is_served_from_the_cache(
    fake: FakeOpenAI, tmp_path: Any
) -> None:
    from click.testing import CliRunner

    from edge_distill.cli import main
    from edge_distill.io import read_jsonl

    fake.schedule = ["ok", "500", "ok", "length"]
    args = [
        "teach", "configs/teacher-llamacpp-server.yaml", f"runs_dir={tmp_path / 'runs'}", "name=t",
        "data.limit_train=2", "data.dev_size=5", "teacher.samples_per_strategy=2", "teacher.n_shots=1",
        f"teacher.http.base_url={fake.url}", f"teacher.cache={tmp_path / 'cache.sqlite'}",
        "teacher.http.backoff_s=0.01", "teacher.http.concurrency=1",
    ]  # fmt: skip
    for _ in range(2):
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        rows = read_jsonl(tmp_path / "runs" / "t" / "teach" / "samples.jsonl")
        assert len(rows) == 2 * 3 * 2 and {r["strategy"] for r in rows} == {"cot", "l2m", "pot"}
        assert all(r["raw"].startswith("echo ") and "pred" in r and "correct" in r for r in rows)
        assert sum(r["meta"].get("failure") == "truncated" for r in rows) == 1
    assert len(fake.log) == 2 * 3 * 2 + 1  # 12 samples + one retried 500; the second run sent nothing
    assert all(r["meta"]["cached"] for r in rows)


def test_a_bad_request_is_one_failure_but_a_run_of_them_stops(fake: FakeOpenAI) -> None:
    fake.schedule = ["400"]  # the only call of this run: the server answered, the request was bad
    out = teacher(fake.url).complete(["too long"], 1, SAMPLING)
    assert out[0][0].error is not None and out[0][0].error.startswith("http_400")
    fake.schedule = ["422"] * 10  # every request rejected: a misconfigured teacher, not bad luck
    with pytest.raises(TeacherError, match="4 call\\(s\\) in a row failed; last error: http_422"):
        teacher(fake.url, give_up_after=4).complete([f"q{i}" for i in range(10)], 1, SAMPLING)


def test_cli_teach_with_a_corrupt_cache_file_warns_and_runs_uncached(
    fake: FakeOpenAI, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from click.testing import CliRunner

    from edge_distill.cli import main
    from edge_distill.io import read_jsonl

    cache = tmp_path / "cache.sqlite"
    cache.write_bytes(b"SQLite format 3\x00" + b"\xde\xad" * 4000)  # the magic, then garbage
    before = cache.read_bytes()
    args = [
        "teach", "configs/teacher-llamacpp-server.yaml", f"runs_dir={tmp_path / 'runs'}", "name=t",
        "data.limit_train=2", "data.dev_size=5", "teacher.n_shots=1", f"teacher.http.base_url={fake.url}",
        f"teacher.cache={cache}", "teacher.http.concurrency=1",
    ]  # fmt: skip
    with caplog.at_level("WARNING"):
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and result.exception is None, result.output
    assert len(read_jsonl(tmp_path / "runs" / "t" / "teach" / "samples.jsonl")) == 2 * 3 * 2
    warned = [r.getMessage() for r in caplog.records if "running without a cache" in r.getMessage()]
    assert len(warned) == 1 and str(cache) in warned[0]
    assert cache.read_bytes() == before
