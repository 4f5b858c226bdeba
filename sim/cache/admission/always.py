"""Always: every miss is admitted (NIRVANA's rule, and the default)."""

from __future__ import annotations

from sim.cache.admission import ADMISSIONS
from sim.cache.admission.base import Admission
from sim.cache.policies.base import RequestContext


@ADMISSIONS.register("always")
class Always(Admission):
    name = "always"

    def admit(self, ctx: RequestContext) -> bool:
        return True
