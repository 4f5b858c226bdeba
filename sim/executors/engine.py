"""SimPy executor: the only code that advances simulated time.

Request lifecycle (DESIGN.md §4): arrival -> embed prompt -> the serving mode's lookup (nearest cached
prompt, K) -> fetch the cached object from its storage tier -> FCFS queue for one of G GPUs -> text
encoder + the decided denoising steps + VAE decode -> respond -> the storage write of what a miss
produced, then its admission. What is decided lives in the mode (sim/scenario/modes/); this file only
decides when.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator
from functools import partial

import simpy
from simpy.events import URGENT

from sim.cache.offline import OFFLINE
from sim.cache.spec import LiveCache
from sim.executors import EXECUTORS
from sim.executors.base import Executor, record_admission, record_decision
from sim.hardware.routing import ROUTERS, GpuState
from sim.scenario import Scenario
from sim.scenario.modes.base import Decision
from sim.scenario.records import Records, new_records
from sim.scenario.service import service_s


class _Start(simpy.Event):
    """A request's arrival, handled like SimPy's own process start (an URGENT event at the current time),
    so that callbacks give the event order a process per request would."""

    def __init__(self, env: simpy.Environment, callback: Callable[[simpy.Event], None]) -> None:
        self.env = env
        self.callbacks = [callback]
        self._value = None
        self._ok = True
        env.schedule(self, URGENT)


@EXECUTORS.register("engine")
class EngineExecutor(Executor):
    """Timed serving: a miss's output is admitted when its generation (and storage write) completes."""

    name = "engine"
    timed = True
    admission = "at generation end (+ storage write)"

    def supports(self, scenario: Scenario) -> str | None:
        spec = scenario.mode.cache_spec
        if spec is not None and spec.policy in OFFLINE and OFFLINE.get(spec.policy).sequential_only:
            # an offline reference reads request indices as its clock, and K as NIRVANA's latent reuse
            return (f"cache.policy: {spec.policy} (an offline reference) runs only with run.executor: sequential, "
                    "got engine")
        return None

    def _execute(self, scenario: Scenario, cache: LiveCache | None) -> Records:
        return Engine(scenario, cache).run()


class Engine:
    """One SimPy model of a Scenario: each request a chain of callbacks, each GPU a worker process.

    ``cache``: the live cache of this execution (None: the mode keeps none)."""

    def __init__(self, scenario: Scenario, cache: LiveCache | None = None) -> None:
        self._sc = scenario
        self._req = scenario.requests
        self._mode = scenario.mode
        self._cache = cache
        self._gpus = scenario.gpus
        self._service = scenario.service
        self._router = ROUTERS.get(scenario.routing)()
        self._frontend = scenario.frontend
        self._tier = scenario.tier
        self._write_delay = scenario.write_delay
        self._window_s = scenario.batch_window_s
        shared: deque[int] = deque()
        self._shared = shared
        router = self._router
        self._states = [
            GpuState(i, gpu.kind, shared if router.shared_queue else deque()) for i, gpu in enumerate(self._gpus)
        ]
        self._wake: dict[int, simpy.Event] = {}  # idle GPUs, each waiting on its wake-up event
        self._done: dict[int, simpy.Event] = {}
        self._enqueued_s: dict[int, float] = {}
        self._work: dict[int, float] = {}
        self._num_batches = 0
        self._all_done: simpy.Event | None = None
        self._num_open = 0
        n = len(self._req)
        # The plan: what each request's decision asks of a GPU (executor state, not read back from records).
        self._steps = [0] * n
        self._cls = [0] * n
        self._factor: list[float] = self._req.step_factor.tolist()
        self._num_steps: list[int] = self._req.num_steps.tolist()
        # Records are stored straight into their final arrays: a numpy item store costs ~20 ns more than a
        # list's, but lists of Python floats held ~1 GiB more at 2M requests and were copied once at the end.
        self._rec: Records = new_records(n)
        self.records: Records = self._rec
        # what routers compare: a request's batch-1 service time on each GPU, per (class, steps)
        self._expected: dict[tuple[int, int], Callable[[GpuState], float]] = {}

    def run(self) -> Records:
        env = simpy.Environment()
        for g in self._states:
            env.process(self._worker(env, g))
        # Arrivals as a chain of callbacks, started like a process (URGENT at time 0), so that events are
        # scheduled in the order the arrivals process gave.
        self._arrival_list = self._req.arrival_s.tolist()
        self._next_arrival = 0
        _Start(env, partial(self._arrivals, env))
        # GPU workers loop forever: the run ends when every request is answered (and admitted).
        self._all_done = env.event()
        self._num_open = len(self._req)
        env.run(until=self._all_done)
        return self.records

    def _close(self) -> None:
        self._num_open -= 1
        if self._num_open == 0 and self._all_done is not None:
            self._all_done.succeed()

    def _arrivals(self, env: simpy.Environment, _: simpy.Event) -> None:
        """Start every request due now, then wait for the next arrival."""
        times, i, n = self._arrival_list, self._next_arrival, len(self._arrival_list)
        while i < n:
            wait = times[i] - env.now
            if wait > 0:
                self._next_arrival = i
                env.timeout(wait).callbacks.append(partial(self._arrival, env, i))
                return
            _Start(env, partial(self._start, env, i))
            i += 1
        self._next_arrival = n

    def _arrival(self, env: simpy.Environment, i: int, _: simpy.Event) -> None:
        _Start(env, partial(self._start, env, i))
        self._next_arrival = i + 1
        self._arrivals(env, _)

    # -- a request's lifecycle, as callbacks (no process per request) -------------------------------
    # Each stage schedules the next exactly where a process would have yielded, so events are created,
    # and ties at equal times broken, in the same order as a process per request would give.
    def _start(self, env: simpy.Environment, i: int, _: simpy.Event) -> None:
        self._rec["arrival_s"][i] = env.now
        if not self._mode.searches:
            self._decided(env, i, 0.0, 0.0, self._mode.decide(self._cache, i, env.now))
            return
        embed_s = self._frontend.embed_s
        if embed_s > 0:
            env.timeout(embed_s).callbacks.append(partial(self._lookup, env, i, embed_s))
        else:
            self._lookup(env, i, embed_s, None)

    def _lookup(self, env: simpy.Environment, i: int, embed_s: float, _: simpy.Event | None) -> None:
        search_s = self._frontend.search_s(self._mode.search_size(self._cache, i))
        # The lookup sees the cache as it is when the search starts.
        decision = self._mode.decide(self._cache, i, env.now)
        if search_s > 0:
            env.timeout(search_s).callbacks.append(lambda _: self._decided(env, i, embed_s, search_s, decision))
        else:
            self._decided(env, i, embed_s, search_s, decision)

    def _decided(self, env: simpy.Environment, i: int, embed_s: float, search_s: float, decision: Decision) -> None:
        rec = self._rec
        record_decision(rec, i, decision)
        rec["embed_s"][i] = embed_s
        rec["search_s"][i] = search_s
        rec["num_steps"][i] = self._num_steps[i]
        if decision.fetch_bytes:
            fetch_s = self._tier.read_s(decision.fetch_bytes)
            rec["fetch_s"][i] = fetch_s
            env.timeout(fetch_s).callbacks.append(lambda _: self._to_gpu(env, i, decision))
        else:
            rec["fetch_s"][i] = 0.0
            self._to_gpu(env, i, decision)

    def _to_gpu(self, env: simpy.Environment, i: int, decision: Decision) -> None:
        if decision.gpu_steps > 0:
            self._steps[i] = decision.gpu_steps
            self._cls[i] = decision.latency_class
            done = env.event()  # the GPU worker fills start, wait, service and finish, then triggers it
            done.callbacks.append(lambda _: self._served(env, i, decision))
            self._enqueue(env, i, done)
            return
        rec = self._rec  # served without a GPU (a cached final image)
        rec["queue_wait_s"][i] = rec["service_s"][i] = 0.0
        rec["finish_s"][i] = env.now
        rec["latency_s"][i] = env.now - rec["arrival_s"][i]
        self._served(env, i, decision)

    def _served(self, env: simpy.Environment, i: int, decision: Decision) -> None:
        if not decision.admit_bytes:
            self._close()
        elif self._write_delay:
            env.timeout(self._tier.write_s(decision.admit_bytes)).callbacks.append(lambda _: self._admit(env, i))
        else:
            self._admit(env, i)

    def _admit(self, env: simpy.Environment, i: int) -> None:
        record_admission(self._rec, i, env.now, self._mode.admit(self._cache, i, env.now))
        self._close()

    # -- GPU stage -------------------------------------------------------------------------------
    def _expected_s(self, i: int) -> Callable[[GpuState], float]:
        """Request i's service time at batch size 1 on a given GPU (what routers compare), tabulated once
        per (class, steps) over the GPUs."""
        key = (self._cls[i], self._steps[i])
        expected = self._expected.get(key)
        if expected is None:
            cls, steps, service = key[0], key[1], self._service
            by_gpu = [service.expected_s(g, cls, steps) for g in range(len(self._gpus))]

            def expected(g: GpuState) -> float:
                return by_gpu[g.index]

            self._expected[key] = expected
        return expected

    def _enqueue(self, env: simpy.Environment, i: int, done: simpy.Event) -> None:
        self._done[i] = done
        self._enqueued_s[i] = env.now
        expected = self._expected_s(i)
        if self._router.shared_queue:
            self._shared.append(i)
            if self._wake:  # the idle GPUs, in index order (under load few: cheaper than scanning every GPU)
                states = self._states
                idle = [states[k] for k in sorted(self._wake)]
                self._wake.pop(self._router.choose(idle, expected, env.now).index).succeed()
            return
        g = self._router.choose(self._states, expected, env.now)
        g.queue.append(i)
        self._work[i] = w = expected(g)
        g.queued_work_s += w
        if g.index in self._wake:
            self._wake.pop(g.index).succeed()

    def _take(self, g: GpuState, batch: list[int]) -> list[int]:
        """Add queued requests of the head's latency class (FCFS among them) up to the batch limit."""
        queue = g.queue
        limit = self._gpus[g.index].max_batch
        if not queue or len(batch) >= limit:
            return batch
        if limit == 1:
            batch.append(queue.popleft())
        else:
            cls = self._cls[batch[0] if batch else queue[0]]
            keep: list[int] = []
            while queue and len(batch) < limit:
                j = queue.popleft()
                (batch if self._cls[j] == cls else keep).append(j)
            queue.extendleft(reversed(keep))
        if not self._router.shared_queue:
            for j in batch:
                g.queued_work_s -= self._work.pop(j, 0.0)
        return batch

    def _worker(self, env: simpy.Environment, g: GpuState) -> Generator[simpy.Event, object, None]:
        while True:
            if not g.queue:
                self._wake[g.index] = wake = env.event()
                yield wake
                continue  # another GPU may have taken the request first: look again
            batch = self._take(g, [])
            if len(batch) < self._gpus[g.index].max_batch and self._window_s > 0:
                yield env.timeout(self._window_s)  # hold the GPU briefly so the batch can fill
                batch = self._take(g, batch)
            yield from self._run(env, g, batch)

    def _run(self, env: simpy.Environment, g: GpuState, batch: list[int]) -> Generator[simpy.Event, object, None]:
        """Static batching: members start together at one batch-size step time; each leaves after its
        own steps and decode; the GPU is free when the longest member is done."""
        rec, steps = self._rec, self._steps
        lat = self._service.latency(g.index, self._cls[batch[0]], len(batch))
        factor = self._factor[batch[0]] if len(batch) == 1 else max(self._factor[j] for j in batch)
        durations = [service_s(lat, steps[j], factor) for j in batch]
        start = env.now
        longest = max(durations)
        g.in_service = len(batch)
        g.busy_until = start + longest
        batch_id = self._num_batches
        self._num_batches += 1
        for j, d in zip(batch, durations, strict=True):
            rec["gpu"][j] = g.index
            rec["batch_id"][j] = batch_id
            rec["batch_size"][j] = len(batch)
            rec["start_s"][j] = start
            rec["queue_wait_s"][j] = start - self._enqueued_s.pop(j)
            rec["service_s"][j] = d
            self._finish_after(env, j, d)
        yield env.timeout(longest)
        g.in_service = 0

    def _finish_after(self, env: simpy.Environment, j: int, delay_s: float) -> None:
        def finish(_: simpy.Event) -> None:
            rec = self._rec
            rec["finish_s"][j] = env.now
            rec["latency_s"][j] = env.now - rec["arrival_s"][j]
            self._done.pop(j).succeed()

        env.timeout(delay_s).callbacks.append(finish)
