"""The time embedding's defaults, per embedding kind (features and dim follow the first level's
channels, as diffusers' UNet2DModel). Formulas: docs/language.md. The settings every kind shares
come from spec/settings.py's TIME_SETTINGS, resolved once for all kinds."""

from __future__ import annotations

from typing import Any

from ..spec.models import FourierTime, LearnedTime, SinusoidalTime
from ..spec.resolved import ResolvedTime
from ..spec.settings import DEFAULTS, TIME_SETTINGS
from .context import Context
from .inherit import default


def resolve_time(t: SinusoidalTime | FourierTime | LearnedTime | None, first_channels: int) -> ResolvedTime | None:
    resolved = _resolve_time(t, first_channels)
    if resolved is not None and resolved.into == "input":  # no MLP: the features are what the model takes
        resolved = resolved.model_copy(update={"dim": resolved.features})
    return resolved


def _resolve_time(t: SinusoidalTime | FourierTime | LearnedTime | None, first_channels: int) -> ResolvedTime | None:
    if t is None:
        return None
    into = default(t.into, DEFAULTS["time.into"])
    common: dict[str, Any] = {
        "dim": t.dim if t.dim is not None else 4 * first_channels, "into": into,
        **{name: default(getattr(t, name), s.default) for name, s in TIME_SETTINGS.items()},
    }
    if isinstance(t, SinusoidalTime):
        return ResolvedTime(
            embedding="sinusoidal", features=t.features or first_channels, **common,
            flip_sin_to_cos=default(t.flip_sin_to_cos, DEFAULTS["sinusoidal.flip_sin_to_cos"]),
            freq_shift=float(default(t.freq_shift, DEFAULTS["sinusoidal.freq_shift"])),
            max_period=float(default(t.max_period, DEFAULTS["sinusoidal.max_period"])), scale=1.0, log=False, timesteps=0,
        )
    if isinstance(t, FourierTime):
        return ResolvedTime(
            embedding="fourier", features=t.features or 2 * first_channels, **common,
            flip_sin_to_cos=default(t.flip_sin_to_cos, DEFAULTS["fourier.flip_sin_to_cos"]), freq_shift=0.0, max_period=10000.0,
            scale=float(default(t.scale, DEFAULTS["fourier.scale"])), log=default(t.log, DEFAULTS["fourier.log"]), timesteps=0,
        )
    return ResolvedTime(
        embedding="learned", features=t.features or first_channels, **common,
        flip_sin_to_cos=False, freq_shift=0.0, max_period=10000.0, scale=1.0, log=False, timesteps=t.timesteps,
    )


def check_time(ctx: Context, time: ResolvedTime) -> None:
    """What the time embedding computes must be numbers. The sinusoidal frequencies are
    exp(-ln(max_period) * i / (half - freq_shift)), i < half = features // 2: at half - freq_shift = 0
    the first is 0/0 (NaN) and beyond it they grow without bound (sin(inf) = NaN), so every
    output of the model would be NaN."""
    half = time.features // 2
    if time.embedding == "sinusoidal" and half >= 1 and time.freq_shift >= half:
        ctx.fail(("time", "freq_shift"), f"freq_shift {time.freq_shift:g} is not below half the {time.features} "
                 f"features ({half}): the frequency exponent divides by their difference, so every output is NaN",
                 found=f"{time.freq_shift:g}", allowed=f"below {half} (diffusers uses 0 or 1)")
