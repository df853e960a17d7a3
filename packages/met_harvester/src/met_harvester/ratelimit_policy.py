"""The rate limiter's tuning (`AimdPolicy`) and what it learns (`LimiterState`), as plain data.

`LimiterState` is what persists per pool (``harvester_state``, see `met_harvester.db.limiter_state`)
so that the next run starts where this one was: at the rate it ran, knowing the rate of the last
block, how long blocks last and how long to wait before climbing above the last block again.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class AimdPolicy:
    """Tuning of the adaptive controller (seconds and requests/s).

    Attributes:
        decrease: factor applied to the achieved rate when a probe confirms a block.
        stray_decrease: factor applied when the probe passed (the block answer was stray);
            1: none, since a firewall like Imperva's answers a real overrun with a real block.
        stray_min_passes: a block answer whose probe passes at once is stray only if at
            least this many answers passed since the last one (else the block was shorter
            than the first pause, and real).
        min_rate: floor of the current rate.
        safety: the target after a block is ``safety`` times the blocking rate.
        quiet_period: clean seconds between two additive steps back up to the target.
        climb_steps: additive steps from the cut rate back to the target.
        climb_step: requests/s added per step above the target (or with nothing learned).
        clean_period: clean seconds at one rate after which that rate counts as sustainable.
        probe_period: clean seconds before a step above the target (doubles when a step above
            the target ends in a block: the climb back-off).
        max_probe_period: upper bound of the doubled climb back-off.
        error_run: consecutive 5xx/timeouts that count as a block answer.
        observe_window: seconds over which the achieved rate is measured.
        first_probe: seconds from a block answer to the probe that tells stray from real.
        probe_growth: factor by which the wait between two blocked probes grows.
        max_probe_wait: longest wait between two probes.
        early_probe: a block of learned length L is first probed at ``early_probe * L``.
        probe_timeout: a probe not answered within this many seconds is sent again.
    """

    decrease: float = 0.5
    stray_decrease: float = 1.0
    stray_min_passes: int = 3
    min_rate: float = 0.05
    safety: float = 0.9
    quiet_period: float = 30.0
    climb_steps: int = 4
    climb_step: float = 0.25
    clean_period: float = 300.0
    probe_period: float = 300.0
    max_probe_period: float = 6 * 3600.0
    error_run: int = 5
    observe_window: float = 10.0
    first_probe: float = 2.0
    probe_growth: float = 1.5
    max_probe_wait: float = 120.0
    early_probe: float = 0.9
    probe_timeout: float = 60.0

    _DURATIONS = (
        "quiet_period",
        "clean_period",
        "probe_period",
        "max_probe_period",
        "observe_window",
        "first_probe",
        "max_probe_wait",
        "probe_timeout",
    )

    def scaled(self, factor: float) -> AimdPolicy:
        """The same policy with every duration multiplied by `factor` (for tests at small scale)."""
        return replace(self, **{name: getattr(self, name) * factor for name in self._DURATIONS})


@dataclass(frozen=True)
class LimiterState:
    """What one pool's limiter has learned (rates in requests/s, durations in seconds).

    Attributes:
        current_rate: the rate it was running at.
        clean_rate: the highest rate that ran clean for a long stretch (None: not known).
        block_rate: the achieved rate when the last real block came (None: never blocked).
        block_seconds: how long the last real block lasted, probe to probe (None: not known).
        probe_period: the climb back-off: clean seconds before a step above the target.
        blocks: real blocks seen (confirmed by a blocked probe), over all runs.
        strays: block answers a passing probe showed to be stray, over all runs.
    """

    current_rate: float
    clean_rate: float | None = None
    block_rate: float | None = None
    block_seconds: float | None = None
    probe_period: float | None = None
    blocks: int = 0
    strays: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, floats rounded to 4 significant digits."""
        return {k: _round(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Any) -> LimiterState | None:
        """Parse a stored dict; None when it is not one (a damaged value is just forgotten)."""
        if not isinstance(data, dict):
            return None
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        rate = values.get("current_rate")
        if not isinstance(rate, int | float) or not math.isfinite(rate) or rate <= 0:
            return None
        for key in ("clean_rate", "block_rate", "block_seconds", "probe_period"):
            value = values.get(key)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                values[key] = None
        for key in ("blocks", "strays"):
            values[key] = int(values[key]) if isinstance(values.get(key), int) else 0
        return cls(**values)


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.4g}")
    return value
