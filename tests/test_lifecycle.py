"""The lifecycle rules and the episode indexes, on plain values: no process, no spool."""

from __future__ import annotations

import errno

from podspool.daemon.core import lifecycle
from podspool.daemon.core.episodes import Episode, EpisodeBook
from podspool.daemon.models import EpisodeManifest
from podspool.stages.base import StageResult

NOW = "2026-11-29T10:00:00.000000Z"


def _m(n: int = 1, bid: str = "b") -> EpisodeManifest:
    return EpisodeManifest(episode_number=n, session_id=f"ep_{n:03d}_{bid}", batch_id=bid, topic=f"t{n}")


def _conclude(m: EpisodeManifest, stage: str, result: StageResult, max_retries: int = 2) -> lifecycle.Transition:
    return lifecycle.conclude(m, stage, result, max_retries=max_retries, now_iso=NOW, now_mono=10.0,  # type: ignore[arg-type]
                            now_unix=1000.0, retry_delay_s=4.0)


def test_a_success_advances_through_every_stage_to_done() -> None:
    m = _m()
    for stage, target in (("research", "production"), ("production", "audio"), ("audio", "done")):
        assert lifecycle.begin(m, stage, NOW, 9.0) is (stage == "research")  # one session slot, taken once
        t = _conclude(m, stage, StageResult(ok=True, cost_usd=0.01))
        assert t.target == target and t.moves
    assert m.status == "done" and m.attempts == 1 and m.costs.total == 0.03 and m.finished_at == NOW
    assert m.timings["audio"].seconds == 1.0


def test_a_fork_changes_through_every_rule_without_touching_the_original() -> None:
    m = _m()
    lifecycle.begin(m, "research", NOW, 9.0)
    _conclude(m, "research", StageResult(ok=False, error="boom", cost_usd=0.01))
    m.details["research"] = {"findings": 3}
    before = m.model_dump_json()
    f = m.fork()
    lifecycle.begin(f, "research", NOW, 11.0)
    _conclude(f, "research", StageResult(ok=True, cost_usd=0.02, details={"findings": 5}))
    lifecycle.begin(f, "production", NOW, 12.0)
    _conclude(f, "production", StageResult(ok=False, error="again", quality=0.5, quality_scores={"x": 0.5}))
    assert m.model_dump_json() == before  # phases, costs, timings, errors, details: all its own
    assert f.costs.total == 0.03 and len(f.errors) == 2 and f.details["research"] == {"findings": 5}
    assert f.model_dump() == EpisodeManifest.model_validate_json(f.model_dump_json()).model_dump()


def test_failures_retry_with_backoff_then_fail_for_good_after_max_retries() -> None:
    m = _m()
    outcomes = []
    for _ in range(3):
        lifecycle.begin(m, "production", NOW, 9.0)
        outcomes.append(_conclude(m, "production", StageResult(ok=False, error="boom", cost_usd=0.002)))
    assert [o.outcome for o in outcomes] == ["retry", "retry", "failed"]
    assert outcomes[0].retry_in == 4.0 and m.attempts == 3 and len(m.errors) == 3
    assert m.status == "failed" and outcomes[-1].target == "failed"
    assert m.costs.production == 0.006  # failed attempts cost money too


def test_a_refusal_that_cannot_improve_fails_at_once() -> None:
    m = _m()
    lifecycle.begin(m, "production", NOW, 9.0)
    t = _conclude(m, "production", StageResult(ok=False, error="quality", retryable=False))
    assert t.outcome == "failed" and m.attempts == 1


def test_a_full_disk_does_not_count_the_attempt() -> None:
    m = _m()
    lifecycle.begin(m, "audio", NOW, 9.0)
    t = _conclude(m, "audio", StageResult(ok=False, error="No space", disk_errno=errno.ENOSPC))
    assert t.outcome == "disk" and t.target == "audio" and not t.moves
    assert m.errors == [] and m.phases.audio == "pending"
    lifecycle.begin(m, "audio", NOW, 9.0)
    assert m.attempts == 1  # the attempt runs again under the same number


def test_recovery_finishes_interrupted_moves_and_reruns_what_was_in_flight() -> None:
    m = _m()
    m.phases.research = "done"
    m.phases.production = "done"
    path, changed = lifecycle.recovered(m, "research", NOW)
    assert path == ["production", "audio"] and not changed
    m2 = _m(2)
    m2.phases.research = "in_progress"
    assert lifecycle.recovered(m2, "research", NOW) == ([], True) and m2.phases.research == "pending"
    m3 = _m(3)
    for s in ("research", "production", "audio"):
        m3.phases.set(s, "done")  # type: ignore[arg-type]
    assert lifecycle.recovered(m3, "audio", NOW) == (["done"], True) and m3.status == "done"


def test_reopen_sends_a_failed_episode_back_with_fresh_attempts() -> None:
    m = _m()
    m.phases.research = "done"
    m.phases.production = "failed"
    m.status, m.attempts = "failed", 4
    assert lifecycle.reopen(m) == "production"
    assert m.status == "pending" and m.attempts == 0 and m.retry_rounds == 1


def test_ready_heaps_give_first_tries_by_number_then_due_retries() -> None:
    book = EpisodeBook(clock=lambda: 0.0, wall=lambda: 0.0)  # both clocks at 0: not_before is the due time
    eps = [Episode(_m(n), "research") for n in (3, 1, 2)]
    retry = _m(0)
    retry.attempts, retry.not_before = 2, 500.0
    eps.append(Episode(retry, "research"))
    for ep in eps:
        book.add(ep)
    got = []
    while (ep := book.pop_ready("research", "b", now=100.0)) is not None:
        got.append(ep.manifest.episode_number)
        book.started(ep)
    assert got == [1, 2, 3]  # the retry is not due yet
    assert book.next_retry_at() == 500.0
    ep = book.pop_ready("research", "b", now=600.0)
    assert ep is not None and ep.manifest.episode_number == 0
    assert book.running("research", "b") == 3


def test_indexes_follow_an_episode_and_forget_it_when_it_finishes() -> None:
    book = EpisodeBook()
    ep = Episode(_m(), "research")
    book.add(ep)
    assert book.has_waiting("research", "b") and book.waiting_batches() == {"b"}
    popped = book.pop_ready("research", "b", 0.0)
    assert popped is ep
    ep.manifest.status = "in_progress"
    book.started(ep)
    assert book.admitted == {ep.episode_id} and book.admitted_count("b") == 1
    book.stopped(ep, "research")
    ep.location = "production"
    book.requeue(ep)
    assert book.has_waiting("production", "b") and not book.has_waiting("research", "b")
    book.remove(ep)
    assert len(book) == 0 and book.admitted == set() and "b" not in book.by_batch
    assert book.pop_ready("production", "b", 0.0) is None  # a stale heap entry is dropped, not returned


def test_an_episode_from_intake_reads_its_manifest_only_when_it_starts() -> None:
    reads: list[tuple[str, str]] = []

    def load(location: str, eid: str) -> EpisodeManifest:
        reads.append((location, eid))
        return _m(int(eid[3:6]))

    book = EpisodeBook(loader=load)
    for n in (2, 1):
        book.add(Episode.queued(f"ep_{n:03d}_b", "b", n, "research", book.loader))
    assert reads == [] and not any(ep.loaded for ep in book)  # queued, counted, indexed: nothing read
    assert book.waiting_by_stage["research"] == 2 and book.admitted == set()
    ep = book.pop_ready("research", "b", 0.0)
    assert ep is not None and ep.number == 1 and reads == []
    assert ep.manifest.session_id == "ep_001_b" and reads == [("research", "ep_001_b")]


def test_an_episode_popped_but_not_started_keeps_its_place() -> None:
    book = EpisodeBook()
    for n in (1, 2):
        book.add(Episode(_m(n), "audio"))
    first = book.pop_ready("audio", "b", 0.0)
    assert first is not None
    book.push_back(first)
    again = book.pop_ready("audio", "b", 0.0)
    assert again is first


def test_results_not_yet_committed_count_against_the_budget() -> None:
    from podspool.daemon.core.batches import BatchState

    b = BatchState(meta={"budget_usd": 1.0})
    b.tally.add_cost("research", 0.6)
    assert not b.over_budget()
    b.pending_usd = 0.4  # applied this tick, its commit still to come: a dispatch meanwhile must see it
    assert b.over_budget()
    b.pending_usd = 0.0
    assert not b.over_budget() and not BatchState(meta={}).over_budget()
