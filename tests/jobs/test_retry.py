"""The retry rules as data: what becomes of a shard's failure on its n-th try, how long results wait."""

from __future__ import annotations

import errno

import pytest

from daemon.jobs.executor import ExecutorUnavailable, FailureKind, ShardFailed, ShardTimedOut, WorkerDied
from daemon.jobs.retry import ShardRetry, Verdict, Waits

FRAMES = "frames 5-8"


def test_from_the_settings_retries_are_tries_after_the_first():
    assert ShardRetry.of(2, 30.0) == ShardRetry(max_tries=3, timeout_s=30.0)
    assert ShardRetry.of(0, None).max_tries == 1


@pytest.mark.parametrize("exc,what", [(WorkerDied("killed by SIGKILL", "w1"), "lost its worker"),
                                      (ShardTimedOut("ran longer than 2 s", "w1"), "timed out")])
def test_a_lost_or_timed_out_shard_runs_again_until_its_tries_are_spent(exc, what):
    policy = ShardRetry(max_tries=3)
    assert [policy.decide(exc, tries, FRAMES).verdict for tries in (1, 2, 3, 4)] == [
        Verdict.RETRY, Verdict.RETRY, Verdict.FAIL, Verdict.FAIL]
    last = policy.decide(exc, 3, FRAMES)
    assert last.reason == f"frames 5-8 {what} 3 times (last: {exc})" and last.costs_try


def test_bad_input_fails_at_once_with_the_videos_reason():
    decision = ShardRetry().decide(ShardFailed("clip.mp4: the stream ends at frame 6", FailureKind.INPUT), 1, FRAMES)
    assert (decision.verdict, decision.reason, decision.traceback) == (
        Verdict.FAIL, "clip.mp4: the stream ends at frame 6", None)


def test_an_internal_error_fails_at_once_named_as_such_with_its_traceback():
    exc = ShardFailed("KeyError: 'x'", FailureKind.INTERNAL, "Traceback (most recent call last): ...", "w2")
    decision = ShardRetry().decide(exc, 1, FRAMES)
    assert decision.verdict is Verdict.FAIL and decision.reason == "internal error on frames 5-8: KeyError: 'x'"
    assert "w2" in decision.traceback and "Traceback" in decision.traceback


def test_an_error_of_the_executors_own_fails_the_job_named_as_internal():
    decision = ShardRetry().decide(RuntimeError("pipe closed"), 1, FRAMES)
    assert decision.verdict is Verdict.FAIL
    assert decision.reason == "internal error on frames 5-8: RuntimeError: pipe closed"


def test_an_unavailable_executor_is_waited_for_and_costs_no_try():
    exc = ExecutorUnavailable("the scheduler went away")
    decision = ShardRetry(max_tries=1).decide(exc, 1, FRAMES)
    assert (decision.verdict, decision.reason, decision.costs_try) == (Verdict.WAIT, "the scheduler went away", False)


def test_a_policy_may_make_an_unavailable_executor_cost_a_try():
    policy = ShardRetry(max_tries=2, unavailable_costs_try=True)
    exc = ExecutorUnavailable("gone")
    assert policy.decide(exc, 1, FRAMES).verdict is Verdict.WAIT and policy.decide(exc, 1, FRAMES).costs_try
    assert policy.decide(exc, 2, FRAMES).verdict is Verdict.FAIL


def test_the_daemon_waits_for_a_full_or_read_only_destination_for_as_long_as_it_takes():
    waits = Waits(retry_s=30.0)
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
        assert waits.destination(OSError(code, "x")) == 30.0
    assert waits.destination(OSError(errno.ENOTDIR, "a file where the folder should be")) is None
    assert [waits.store(tries) for tries in (1, 10, 1000)] == [30.0] * 3


def test_aud_extract_fails_at_once_on_its_destination_and_gives_the_store_a_few_tries():
    waits = Waits(store_tries=3, store_pause_s=0.5)
    assert waits.destination(OSError(errno.ENOSPC, "full")) is None
    assert [waits.store(tries) for tries in (1, 2, 3, 4)] == [0.5, 0.5, None, None]


def test_a_retry_says_which_try_it_was():
    decision = ShardRetry(max_tries=3).decide(WorkerDied("killed", "w1"), 1, FRAMES)
    assert decision.reason == "frames 5-8 lost its worker on try 1 of 3 (killed)"
