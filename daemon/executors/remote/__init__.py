"""Stage work on Dramatiq workers over Redis (`[executor] kind = "dramatiq"`).

The supervisor stays the only writer of the spool. `DramatiqExecutor` packs a task's inputs into a
Dramatiq message; a `podspool worker` on any host that reaches Redis unpacks them into a temporary
folder, runs the stage, and sends back the StageResult and the artifacts it wrote (large ones in
chunked Redis keys with a TTL); the executor writes those artifacts whole into the episode folder.

Failure semantics (each one tested in tests/test_remote_*.py):
- A worker host killed mid-task: Dramatiq's Redis broker hands its unacknowledged messages to another
  worker once its heartbeat is `heartbeat_timeout_s` old. Every task carries a token; the executor
  applies the first result for a token still in flight and drops any later one, so an episode's
  result is applied once. A task that has killed its worker `max_deliveries` times (poison) comes
  back as a failed, non-retryable result instead of being run again.
- The broker restarted: `submit` returns False while Redis is down (the supervisor keeps the task and
  tries again), results wait in Redis. When Redis comes back with a new `run_id` (it may have lost
  its queues: we assume no persistence), every task in flight is sent again under the same token; a
  result that survived is applied once, its twin dropped. Stage work that needs Redis meanwhile (a
  rate-limit decision: `RedisLimiter`; the quality gates' lock: `GateLock`) waits for it, up to
  `OUTAGE_WAIT_S`, instead of failing the attempt; a result whose artifacts the restarted broker lost
  sends its task out once more rather than counting as a failure.
- The supervisor killed: workers finish what they hold and post results to the spool's result list,
  which outlives the supervisor. The restarted supervisor's recovery scan submits the in-flight phases
  again; an ok result from the previous life for the same episode and stage is applied instead of
  sending the task again (reconciled, not paid twice); anything else from the old life is dropped.
- A stage that fails or exceeds its time limit is an ordinary failed result; episode-level retries
  stay the supervisor's. Dramatiq's own retries only cover our plumbing (Redis errors posting a result).
"""
