"""The simulated sky and radiometer: what a VEGAS bank records for a known Tsys, Tcal and line.

Model, per integration i, sampler s, switching state k and channel c::

    T      = (Tsys - Tcal/2) + cal_k * Tcal + on_source * line(f_c)        [K]
    counts = gain_s * bandpass(c) * T * (1 + n / sqrt(|dnu| * t_k)),  n ~ N(0, 1)

``Tsys`` is the cal-averaged system temperature, the quantity GBTIDL and dysh
report (``<off>/<on-off> * Tcal + Tcal/2``), so calibrating the simulated data
the standard way gives back exactly the numbers asked for.  The line is a
Gaussian in sky frequency with a known peak (K), FWHM and centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["C_KMS", "GaussianLine", "bandpass", "bank_counts", "gaussian_line_k"]

C_KMS = 299_792.458
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclass(frozen=True)
class GaussianLine:
    """A spectral line: peak antenna temperature, centre and full width at half maximum in sky frequency."""

    peak_k: float
    centre_hz: float
    fwhm_hz: float

    @classmethod
    def from_velocity_width(cls, peak_k: float, centre_hz: float, fwhm_kms: float) -> GaussianLine:
        return cls(peak_k, centre_hz, centre_hz * fwhm_kms / C_KMS)


def gaussian_line_k(freq_hz: np.ndarray, line: GaussianLine) -> np.ndarray:
    """The line's antenna temperature (K) at each frequency."""
    sigma = line.fwhm_hz / FWHM_PER_SIGMA
    return line.peak_k * np.exp(-0.5 * ((freq_hz - line.centre_hz) / sigma) ** 2)


def bandpass(nchan: int) -> np.ndarray:
    """A smooth VEGAS-like bandpass: flat, a gentle ripple, roll-off in the outer few percent."""
    x = np.linspace(-1.0, 1.0, nchan)
    return (1.0 - 0.6 * x**40) * (1.0 + 0.03 * np.sin(3.0 * np.pi * x))


def bank_counts(
    rng: np.random.Generator,
    sky_freq_hz: np.ndarray,
    chan_width_hz: float,
    exposure_s: np.ndarray,
    cal_on: np.ndarray,
    gains: np.ndarray,
    tsys_k: float,
    tcal_k: float,
    line: GaussianLine | None,
    on_source: np.ndarray,
) -> np.ndarray:
    """Counts of shape (integrations, samplers, states, channels), float32.

    Parameters
    ----------
    sky_freq_hz
        (channels,) sky frequency of each channel.
    exposure_s
        (integrations, states) exposure of each state, for the radiometer noise.
    cal_on
        (states,) 1 where the noise diode is on.
    gains
        (samplers,) counts per kelvin of each sampler.
    on_source
        (samplers,) True where the sampler's beam sees the source (and its line).
    """
    nint, nstate = exposure_s.shape
    nchan = sky_freq_hz.size
    temp = (tsys_k - tcal_k / 2.0) + cal_on[:, None] * tcal_k  # (states, channels) after broadcasting below
    temp = np.broadcast_to(temp, (gains.size, nstate, nchan)).astype(np.float64)  # per sampler: not all see the line
    if line is not None:
        temp[np.asarray(on_source, dtype=bool)] += gaussian_line_k(sky_freq_hz, line)[None, :]
    scale = gains[None, :, None, None] * bandpass(nchan)[None, None, None, :]
    sigma = 1.0 / np.sqrt(abs(chan_width_hz) * exposure_s)  # (integrations, states)
    noise = rng.standard_normal((nint, gains.size, nstate, nchan), dtype=np.float32)
    noise *= sigma[:, None, :, None].astype(np.float32)
    noise += 1.0
    counts = noise * (scale * temp[None, :, :, :]).astype(np.float32)
    return counts.astype(np.float32, copy=False)
