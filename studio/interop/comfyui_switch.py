"""Where ComfyUI's SDXL base hands over to its refiner, as Studio's `refiner_switch`.

ComfyUI splits by step count: with `steps` n, the base KSamplerAdvanced runs steps 0..k-1
(end_at_step k) and the refiner runs k..n-1 of the same n-step schedule. diffusers, which
Studio's refiner pass runs on, splits by timestep value: denoising_end x makes the base
run the steps whose timestep t >= int(round(1000 - 1000 x)), and the refiner's
denoising_start x runs the others. So x = k / n gives the base k steps only where that
cut falls between the schedule's k-th and (k+1)-th timesteps, which depends on the
scheduler's spacing (SDXL's `leading` spacing steps by 1000 // n, not 1000 / n: at 30
steps, 20 / 30 gives the base 19). The import counts the steps on the timesteps diffusers' scheduler
makes from SDXL's standard scheduler config (worked out here: the host imports no model
library; the tests compare them with diffusers' own) and keeps k / n where it is exact, else
takes the switch nearest it that gives k steps, else refuses (switch_for returns None).
"""

from __future__ import annotations

import numpy as np

TRAIN_TIMESTEPS = 1000
STEPS_OFFSET = 1  # SDXL's scheduler config: scaled_linear betas 0.00085 to 0.012, leading spacing, steps_offset 1
BETAS = (0.00085, 0.012)
# Studio's schedulers whose diffusers class (DPMSolverMultistep, UniPCMultistep) spaces n steps as n + 1 points
# less the last; the others (Euler, Euler ancestral, Heun, DDIM, DDPM) as n points
PLUS_ONE = ("dpm++", "dpm++-karras", "unipc")
KARRAS = ("dpm++-karras", "euler-karras", "heun-karras")
MARGIN = 0.01  # how near a cut a fractional timestep may lie (ours and diffusers' agree within 1e-3)


def timesteps(steps: int, scheduler: str) -> list[float]:
    """The n timesteps Studio's `scheduler` ("default" is SDXL's own, Euler) visits on
    SDXL's standard scheduler config, one a step, as diffusers' set_timesteps makes them
    (tests/test_import_comfy_sdxl.py compares them with diffusers' own)."""
    plus = 1 if scheduler in PLUS_ONE else 0
    ratio = TRAIN_TIMESTEPS // (steps + plus)
    spaced = (np.arange(steps + plus) * ratio)[::-1][:steps].astype(np.float64) + STEPS_OFFSET
    if scheduler not in KARRAS:
        return [float(t) for t in spaced]
    betas = np.linspace(BETAS[0] ** 0.5, BETAS[1] ** 0.5, TRAIN_TIMESTEPS, dtype=np.float32) ** 2
    alphas = np.cumprod(1 - betas, dtype=np.float32)
    sigmas = ((1 - alphas) / alphas) ** 0.5
    log_sigmas = np.log(sigmas.astype(np.float64))
    # Karras et al.'s noise levels: DPM-Solver's over the whole trained range, Euler's and Heun's over the spaced one
    ends = (sigmas[0], sigmas[-1]) if plus else tuple(np.interp(spaced[[-1, 0]], np.arange(TRAIN_TIMESTEPS), sigmas))
    low, high = (float(end) ** (1 / 7) for end in ends)
    levels = (high + np.linspace(0, 1, steps) * (low - high)) ** 7
    found = [_sigma_to_t(level, log_sigmas) for level in levels]
    return [float(round(t)) if plus else t for t in found]


def _sigma_to_t(sigma: float, log_sigmas: np.ndarray) -> float:
    """A noise level's timestep, interpolated in log sigma (diffusers' and k-diffusion's rule)."""
    log_sigma = np.log(max(sigma, 1e-10))
    low = int(np.clip(np.cumsum(log_sigma - log_sigmas >= 0).argmax(), None, len(log_sigmas) - 2))
    weight = float(np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1]), 0, 1))
    return (1 - weight) * low + weight * (low + 1)


def base_steps(switch: float, visited: list[float]) -> int:
    """How many steps diffusers' SDXL pipeline runs with denoising_end=switch (its own rule)."""
    cutoff = int(round(TRAIN_TIMESTEPS - switch * TRAIN_TIMESTEPS))
    return sum(t >= cutoff for t in visited)


def _exact_cuts(visited: list[float]) -> dict[int, int]:
    """Each whole-number cut diffusers may take -> the steps the base then runs, for the
    cuts no Karras timestep (a float) lies within MARGIN of: there, float rounding in
    another diffusers or torch could move the count."""
    times = np.array(visited)
    cuts = np.arange(1, TRAIN_TIMESTEPS)
    fuzzy = times[times != np.round(times)]
    safe = np.all(np.abs(fuzzy[None, :] - cuts[:, None]) >= MARGIN, axis=1) if fuzzy.size else np.ones(len(cuts), bool)
    counts = (times[None, :] >= cuts[:, None]).sum(axis=1)
    return {int(cut): int(count) for cut, count, ok in zip(cuts, counts, safe) if ok}


def switch_for(steps: int, end: int, scheduler: str) -> float | None:
    """The refiner_switch that gives the base exactly `end` of `steps` steps, end / steps
    where that is exact; None where no switch does."""
    cuts = _exact_cuts(timesteps(steps, scheduler))
    plain = round(end / steps, 6)
    if cuts.get(int(round(TRAIN_TIMESTEPS - plain * TRAIN_TIMESTEPS))) == end:
        return plain
    found = [cut for cut, count in cuts.items() if count == end]
    if not found:
        return None
    best = min(found, key=lambda cut: abs((1 - cut / TRAIN_TIMESTEPS) - end / steps))
    return round(1 - best / TRAIN_TIMESTEPS, 3)


def exact_ends(steps: int, scheduler: str) -> list[int]:
    """The end_at_step values, 1 to steps - 1, that some switch makes exact."""
    return sorted(end for end in set(_exact_cuts(timesteps(steps, scheduler)).values()) if 0 < end < steps)
