"""Typed parameters of eviction and admission policies (config data: frozen, validated by problems())."""

from __future__ import annotations

from dataclasses import dataclass

Problems = list[tuple[str, str]]


def _window_problems(window_requests: int | None, window_s: float | None) -> Problems:
    if (window_requests is None) == (window_s is None):
        return [("window_requests", "exactly one of window_requests and window_s (null the other), "
                                    f"got {window_requests} and {window_s}")]
    if window_requests is not None and window_requests <= 0:
        return [("window_requests", f"an integer > 0, got {window_requests}")]
    if window_s is not None and not window_s > 0:
        return [("window_s", f"a number > 0, got {window_s}")]
    return []


@dataclass(frozen=True)
class PolicyParams:
    """Parameters read by some eviction policies; each policy's docstring names the ones it reads."""

    #: lcbfu_window: uses count only within the last window_requests requests, or window_s seconds
    window_requests: int | None = 1000
    window_s: float | None = None
    #: rnd_lru: probability of declining a hit at K is ((N - K) / N) ** decline_exponent
    decline_exponent: float = 4.0
    #: qlru_dc: refresh probability q (qLRU's q); insertions are weighted by the steps they would save
    q: float = 0.1
    #: lcbfu: the use count a newly admitted noise starts with. 0: NIRVANA's rule as published (a new noise
    #: scores 0 and is evicted before any used one: the policy freezes on its first content); 1: the miss
    #: that generated it counts as a use (score K, as LFU-DA and LCBFU-DA count it). The paper does not say.
    lcbfu_initial_uses: int = 0

    def problems(self) -> Problems:
        out = _window_problems(self.window_requests, self.window_s)
        if not self.decline_exponent > 0:
            out.append(("decline_exponent", f"a number > 0, got {self.decline_exponent}"))
        if not 0 < self.q <= 1:
            out.append(("q", f"a probability in (0, 1], got {self.q}"))
        if not 0 <= self.lcbfu_initial_uses <= 1:
            out.append(("lcbfu_initial_uses", f"0 (published) or 1 (the generating miss counts), got "
                                              f"{self.lcbfu_initial_uses}"))
        return out


@dataclass(frozen=True)
class AdmissionParams:
    """Parameters of the admission policies (sim/cache/admission/)."""

    #: probabilistic: admit a miss with probability q
    q: float = 0.5
    #: second_hit: admit a prompt on its second miss within window_requests requests, or window_s seconds
    window_requests: int | None = 1000
    window_s: float | None = None

    def problems(self) -> Problems:
        out = _window_problems(self.window_requests, self.window_s)
        if not 0 < self.q <= 1:
            out.append(("q", f"a probability in (0, 1], got {self.q}"))
        return out
