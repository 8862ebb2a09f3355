"""Audio in: waveforms to causal spectrograms ``(F, T)`` at the frame rate of the neural data.

:func:`spectrogram` turns a waveform into a stimulus for :class:`~dstrf.data.trials.Trials`; :func:`load_audio`
reads WAV, FLAC or OGG files with soundfile. Needs the optional packages librosa (mel filterbank) and soundfile
(reading files): ``pip install 'dstrf-lightning[audio]'``.

**Causal framing.** With ``hop = sample_rate / frame_rate`` samples per frame and an analysis window of
``win >= hop`` samples, frame ``t`` summarises the samples ``[t*hop - win + hop, (t+1)*hop)`` only: the window
*ends* at the end of the frame (samples before the start of the audio are zeros). Frame ``t`` therefore never
sees audio after the frame ends, unlike a centred STFT (librosa's default), which would leak half a window of
the future into a causal model. There are ``T = floor(n_samples / hop)`` frames; the samples of a partial last
frame (the final ``n_samples mod hop``) are dropped, so frame ``t`` lines up with neural frame ``t``, which
covers the same interval ``[t/frame_rate, (t+1)/frame_rate)`` seconds.

**Levels.** Both kinds give band power in dB, ``10 * log10(E + 10**(floor_db / 10))``, with a *fixed* floor
(default -100 dB re a full-scale power of 1): a floor relative to the loudest frame would make every frame
depend on the whole recording, future included. A full-scale sine (amplitude 1, mean square 0.5) at a band's
centre frequency gives that band about ``10 log10(0.5) = -3 dB`` with either kind.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import scipy.signal

__all__ = ["KINDS", "spectrogram", "load_audio", "erb", "erb_space"]

KINDS = ("logmel", "gammatone")
_MAX_RESAMPLE_FACTOR = 2**16  # resample_poly's filter has ~20 * max(up, down) taps
_BLOCK_FRAMES = 2048  # STFT frames transformed at once (bounds memory for long recordings)
_CHUNK_SAMPLES = 2**18  # samples gammatone-filtered at once
_INSTALL = "pip install 'dstrf-lightning[audio]' (or pip install librosa soundfile)"


def erb(freq: np.ndarray | float) -> np.ndarray:
    """Equivalent rectangular bandwidth in Hz at ``freq`` Hz (Glasberg & Moore 1990):
    ``ERB(f) = 24.7 * (4.37 f / 1000 + 1)``."""
    return 24.7 * (4.37e-3 * np.asarray(freq, dtype=np.float64) + 1.0)


def erb_space(fmin: float, fmax: float, n_bands: int) -> np.ndarray:
    """``n_bands`` centre frequencies ``(n_bands,)`` in Hz from ``fmin`` to ``fmax`` (both included), equally
    spaced on the ERB-number scale of Glasberg & Moore (1990), ``E(f) = 21.4 * log10(1 + 4.37 f / 1000)``
    (the number of ERBs below f), whose inverse is ``f = (10**(E / 21.4) - 1) * 1000 / 4.37``."""
    low, high = 21.4 * np.log10(1.0 + 4.37e-3 * np.array([fmin, fmax], dtype=np.float64))
    numbers = np.linspace(low, high, n_bands) if n_bands > 1 else np.array([low])
    return (10.0 ** (numbers / 21.4) - 1.0) / 4.37e-3


# -- validation: the one place where the arguments of spectrogram are checked --------------------------------------
@dataclass(frozen=True)
class _Plan:
    """Validated arguments: the mono waveform at the working ``sample_rate`` (after any resampling), the integer
    ``hop``, the window length ``win`` (samples), the band edges and the floor as a power."""

    waveform: np.ndarray  # (n_samples,) float64
    sample_rate: float
    hop: int
    win: int
    fmin: float
    fmax: float
    n_bands: int
    floor: float


def _number(value, name: str, unit: str) -> float:
    """``value`` as a finite float, or a TypeError/ValueError naming the argument and its unit."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number ({unit}); got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number ({unit}); got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite ({unit}); got {value!r}")
    return number


def _positive(value, name: str, unit: str) -> float:
    """``value`` as a positive finite float, or a TypeError/ValueError naming the argument."""
    number = _number(value, name, unit)
    if number <= 0:
        raise ValueError(f"{name} must be a positive number ({unit}); got {value!r}")
    return number


def _mono(waveform) -> np.ndarray:
    """A real, finite ``(n_samples,)`` or ``(channels, n_samples)`` waveform as mono float64 ``(n_samples,)``:
    channels are averaged, ``x[n] = mean_c waveform[c, n]``. Integer samples are used as they are (not scaled
    to [-1, 1]), which shifts every band by the same number of dB."""
    try:
        array = np.asarray(waveform)
    except (TypeError, ValueError) as error:
        raise TypeError(f"waveform must be a numeric array; could not convert it ({error})") from None
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"waveform must be real numbers (integer or float samples); got dtype {array.dtype}")
    if array.ndim not in (1, 2):
        raise ValueError(f"waveform must be (n_samples,) or (channels, n_samples); got shape {array.shape}")
    if array.ndim == 2 and array.shape[0] > array.shape[1]:
        raise ValueError(
            f"waveform of shape {array.shape} is read as {array.shape[0]} channels x {array.shape[1]} samples; "
            "it looks like (n_samples, channels) (soundfile.read's layout): pass waveform.T"
        )
    if array.size == 0:
        raise ValueError(f"waveform is empty (shape {array.shape})")
    array = array.astype(np.float64, copy=False)
    bad = np.flatnonzero(~np.isfinite(array.reshape(-1)))
    if bad.size:
        where = tuple(int(i) for i in np.unravel_index(bad[0], array.shape))
        raise ValueError(f"waveform contains {bad.size} non-finite sample(s) (NaN/Inf), the first at index {where}")
    return array.mean(axis=0) if array.ndim == 2 else array


def _rate_fraction(rate: float) -> Fraction:
    """A rate as an exact fraction, reading e.g. 1000/3 Hz stored as a float back as 1000/3."""
    return Fraction(rate).limit_denominator(10_000)


def _hop(sample_rate: float, frame_rate: float, resample: bool) -> tuple[int, int, int]:
    """``(hop, up, down)``: samples per frame, and the factors ``new_rate = sample_rate * up / down`` that make
    ``hop = new_rate / frame_rate`` an integer (``up == down == 1`` when it already is one).

    The new rate is the one nearest ``sample_rate`` that makes it an integer: ``hop = round(sample_rate /
    frame_rate)`` (at least 1) and ``new_rate = hop * frame_rate``.
    """
    ratio = _rate_fraction(sample_rate) / _rate_fraction(frame_rate)
    if ratio.denominator == 1:
        return int(ratio), 1, 1
    hop = max(1, round(ratio))
    factor = hop * _rate_fraction(frame_rate) / _rate_fraction(sample_rate)
    new_rate = float(hop * _rate_fraction(frame_rate))
    if not resample:
        raise ValueError(
            f"sample_rate {sample_rate:g} Hz is not a whole multiple of frame_rate {frame_rate:g} Hz "
            f"({float(ratio):g} samples per frame): pass resample=True to resample the audio to {new_rate:g} Hz "
            f"({hop} samples per frame), or resample it yourself to a multiple of {frame_rate:g} Hz"
        )
    if max(factor.numerator, factor.denominator) > _MAX_RESAMPLE_FACTOR:
        raise ValueError(
            f"resampling from sample_rate {sample_rate:g} Hz to {new_rate:g} Hz (a multiple of frame_rate "
            f"{frame_rate:g} Hz) needs the ratio {factor.numerator}/{factor.denominator}, too fine for "
            "scipy.signal.resample_poly; resample the audio yourself to a whole multiple of the frame rate"
        )
    return hop, factor.numerator, factor.denominator


def _plan(waveform, sample_rate, frame_rate, kind, n_bands, fmin, fmax, window, floor_db, resample) -> _Plan:
    """Check every argument of :func:`spectrogram` (errors name the argument) and resample if needed."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    sample_rate = _positive(sample_rate, "sample_rate", "samples per second")
    frame_rate = _positive(frame_rate, "frame_rate", "frames per second")
    if isinstance(n_bands, (bool, np.bool_)) or not isinstance(n_bands, (int, np.integer)) or n_bands < 1:
        raise ValueError(f"n_bands must be a positive integer; got {n_bands!r}")
    window = _positive(window, "window", "seconds")
    floor_db = _number(floor_db, "floor_db", "the level of silence in dB")
    mono = _mono(waveform)
    if frame_rate > sample_rate:
        raise ValueError(f"frame_rate {frame_rate:g} Hz is above sample_rate {sample_rate:g} Hz; a frame needs samples")
    hop, up, down = _hop(sample_rate, frame_rate, resample)
    original_rate, sample_rate = sample_rate, sample_rate * up / down
    n_samples = -(-mono.shape[0] * up // down)  # resample_poly's output length, ceil(n * up / down)
    if n_samples < hop:
        raise ValueError(
            f"waveform has {mono.shape[0]} samples at {original_rate:g} Hz, fewer than one frame "
            f"({hop} samples at {sample_rate:g} Hz for frame_rate {frame_rate:g} Hz)"
        )
    nyquist = sample_rate / 2
    fmin = _number(fmin, "fmin", "Hz")
    if fmin < 0:
        raise ValueError(f"fmin must be a frequency >= 0 Hz; got {fmin!r}")
    if fmax is None:  # gammatone centres must lie strictly below Nyquist, with room for the filter's upper skirt
        fmax = min(8000.0, nyquist if kind == "logmel" else 0.45 * sample_rate)
    fmax = _number(fmax, "fmax", "Hz")
    if not fmin < fmax:
        raise ValueError(f"fmax must be above fmin ({fmin:g} Hz); got {fmax!r}")
    if kind == "logmel" and fmax > nyquist:
        raise ValueError(f"fmax {fmax:g} Hz is above the Nyquist frequency {nyquist:g} Hz of {sample_rate:g} Hz audio")
    if kind == "gammatone" and (fmax >= nyquist or fmin <= 0):
        raise ValueError(
            f"gammatone centre frequencies must lie in (0, {nyquist:g}) Hz (Nyquist of {sample_rate:g} Hz audio); "
            f"got fmin {fmin:g} Hz, fmax {fmax:g} Hz"
        )
    win = max(hop, round(window * sample_rate))
    if (up, down) != (1, 1):
        mono = scipy.signal.resample_poly(mono, up, down)
    return _Plan(mono, sample_rate, hop, win, fmin, fmax, int(n_bands), 10.0 ** (floor_db / 10.0))


# -- the two kinds ----------------------------------------------------------------------------------------------
def _window(win: int) -> np.ndarray:
    """The analysis window ``(win,)``: Hann sampled at half-integer points, ``w[n] = sin^2(pi (n + 1/2) / win)``,
    so that no sample of a frame, its newest and oldest included, gets weight zero."""
    return np.sin(np.pi * (np.arange(win) + 0.5) / win) ** 2


def _band_power(x: np.ndarray, hop: int, win: int, weights: np.ndarray) -> np.ndarray:
    """Band power ``E = weights @ P`` ``(F, T)`` of the causal frames of ``x`` ``(n_samples,)``, for band
    weights ``(F, win // 2 + 1)`` over the one-sided power spectrum ``P`` ``(win // 2 + 1, T)``.

    Frame t is ``x[t*hop - win + hop : (t+1)*hop]`` (zeros before the start), ``T = floor(n_samples / hop)``.
    ``P_k = c_k |sum_n w[n] x[n] e^{-2 pi i k n / win}|^2 / (sum_n w[n])^2`` with ``c_k = 2`` except at DC (and
    at Nyquist for even ``win``), where ``c_k = 1``: a sine of amplitude A at bin k has ``P_k = A^2 / 2``, its
    mean square. Frames are transformed ``_BLOCK_FRAMES`` at a time, so only ``P`` of one block is in memory.
    """
    n_frames = x.shape[0] // hop
    padded = np.concatenate([np.zeros(win - hop), x[: n_frames * hop]])
    frames = np.lib.stride_tricks.sliding_window_view(padded, win)[::hop]  # (T, win), a view
    w = _window(win)
    scale = np.full(win // 2 + 1, 2.0)
    scale[0] = 1.0
    if win % 2 == 0:
        scale[-1] = 1.0
    scale /= w.sum() ** 2
    energy = np.empty((weights.shape[0], n_frames))
    for start in range(0, n_frames, _BLOCK_FRAMES):
        spectra = np.fft.rfft(frames[start : start + _BLOCK_FRAMES] * w, axis=1)  # (block, win // 2 + 1)
        energy[:, start : start + _BLOCK_FRAMES] = weights @ (np.abs(spectra) ** 2 * scale).T
    return energy


def _logmel_energy(plan: _Plan) -> tuple[np.ndarray, np.ndarray]:
    """Mel band power ``(F, T)`` and band centres ``(F,)``: ``E[m, t] = sum_k M[m, k] P[k, t]``.

    ``M`` is ``librosa.filters.mel(norm=None)`` (Slaney's mel scale): triangles that peak at 1 at their centre and
    reach 0 at the neighbouring centres, so a sine at a band's centre puts its whole power into that band, and a
    sine between two centres splits its power between them, the nearer centre getting more. The centres are
    ``librosa.mel_frequencies(F + 2, fmin, fmax)[1:-1]`` (the outer two are the lower and upper edges).
    """
    try:
        import librosa
    except ImportError:
        raise ImportError(f"spectrogram(kind='logmel') needs librosa: {_INSTALL}") from None
    n_fft = plan.win
    with warnings.catch_warnings():  # librosa warns on empty bands; they are an error below, naming the fix
        warnings.filterwarnings("ignore", message="Empty filters detected", category=UserWarning)
        weights = librosa.filters.mel(
            sr=plan.sample_rate, n_fft=n_fft, n_mels=plan.n_bands, fmin=plan.fmin, fmax=plan.fmax, norm=None
        )  # (F, n_fft // 2 + 1)
    freqs = librosa.mel_frequencies(n_mels=plan.n_bands + 2, fmin=plan.fmin, fmax=plan.fmax)[1:-1]
    empty = np.flatnonzero(weights.max(axis=1) <= 0)
    if empty.size:
        raise ValueError(
            f"mel band {empty[0]} (centre {freqs[empty[0]]:.1f} Hz) and {empty.size - 1} other(s) contain no FFT bin: "
            f"the {1000 * plan.win / plan.sample_rate:g} ms window resolves only {plan.sample_rate / n_fft:.1f} Hz; "
            "use a longer window, fewer n_bands or a higher fmin"
        )
    return _band_power(plan.waveform, plan.hop, plan.win, weights.astype(np.float64)), freqs


def _gammatone_sos(centre: float, sample_rate: float) -> np.ndarray:
    """Second-order sections ``(4, 6)`` of the 4th-order IIR gammatone filter at ``centre`` Hz, unity gain there.

    The filter is scipy.signal.gammatone's (Slaney 1993): numerator ``b`` from scipy, denominator
    ``(1 - 2 r cos(theta) z^-1 + r^2 z^-2)^4`` with ``r = exp(-2 pi 1.019 ERB(centre) / sample_rate)`` and
    ``theta = 2 pi centre / sample_rate``. Its poles are placed here directly instead of taken from scipy's
    expanded 8th-order polynomial, which is numerically unstable for low centres at high rates (below ~100 Hz
    at 44.1 kHz the fourfold pole rounds to outside the unit circle and lfilter diverges). The cascade is
    renormalised so that ``|H(centre)| = 1`` exactly.
    """
    b, a = scipy.signal.gammatone(centre, "iir", fs=sample_rate)
    r = math.exp(-2 * math.pi * 1.019 * float(erb(centre)) / sample_rate)
    theta = 2 * math.pi * centre / sample_rate
    poles = np.repeat([r * np.exp(1j * theta), r * np.exp(-1j * theta)], 4)
    sos = scipy.signal.zpk2sos(np.roots(b), poles, b[0] / a[0])
    _, response = scipy.signal.sosfreqz(sos, worN=[centre], fs=sample_rate)
    sos[0, :3] /= abs(response[0])
    return sos


def _gammatone_energy(plan: _Plan) -> tuple[np.ndarray, np.ndarray]:
    """Gammatone band power ``(F, T)`` and centres ``(F,)`` (:func:`erb_space`, fmin to fmax included).

    Each band filters the waveform with a causal IIR gammatone (:func:`_gammatone_sos`, run as a cascade of
    second-order lfilter sections by ``scipy.signal.sosfilt``), squares it (instantaneous power) and takes the
    mean over each frame's own samples, ``E[f, t] = mean_{n in [t*hop, (t+1)*hop)} y_f[n]^2``; a filter output
    depends only on past and present input, so frame t depends on no sample after ``(t+1)*hop``.
    """
    freqs = erb_space(plan.fmin, plan.fmax, plan.n_bands)
    hop, n_frames = plan.hop, plan.waveform.shape[0] // plan.hop
    x = plan.waveform[: n_frames * hop]
    chunk = hop * max(1, _CHUNK_SAMPLES // hop)  # whole frames per chunk; the filter state carries over
    energy = np.empty((plan.n_bands, n_frames))
    for f, centre in enumerate(freqs):
        sos = _gammatone_sos(float(centre), plan.sample_rate)
        state = np.zeros((sos.shape[0], 2))
        for start in range(0, x.shape[0], chunk):
            y, state = scipy.signal.sosfilt(sos, x[start : start + chunk], zi=state)
            energy[f, start // hop : (start + y.shape[0]) // hop] = (y * y).reshape(-1, hop).mean(axis=1)
    return energy, freqs


def spectrogram(
    waveform,
    sample_rate: float,
    frame_rate: float,
    kind: str = "logmel",
    n_bands: int = 64,
    fmin: float = 50.0,
    fmax: float | None = None,
    window: float = 0.025,
    floor_db: float = -100.0,
    resample: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """A causal log-power spectrogram of ``waveform`` at ``frame_rate`` frames per second.

    Parameters
    ----------
    waveform : array-like ``(n_samples,)`` or ``(channels, n_samples)``
        Real, finite samples; several channels are mixed to mono by averaging them.
    sample_rate, frame_rate : float
        Samples and frames per second. ``hop = sample_rate / frame_rate`` must be a whole number of samples;
        if it is not and ``resample`` is true, the audio is first resampled with ``scipy.signal.resample_poly``
        to ``round(sample_rate / frame_rate) * frame_rate`` Hz, the nearest rate that makes it one (e.g.
        22050 Hz at 128 frames/s becomes 22016 Hz, hop 172). resample_poly's anti-aliasing filter is
        linear-phase, so it mixes about 10 input samples of the future into each output sample (0.45 ms at
        22.05 kHz), far less than a frame; resample beforehand with a causal filter if even that matters.
        With ``resample=False`` a rate that does not divide is a ValueError naming both rates.
    kind : ``"logmel"`` or ``"gammatone"``
        ``"logmel"``: power spectra of causal frames of ``window`` seconds (Hann window ending at the frame's
        end; at least one hop long) weighted by librosa's mel filterbank. ``"gammatone"``: a bank of causal
        IIR gammatone filters at ERB-spaced centres, squared and averaged over each frame (``window`` unused).
    n_bands : int
        Number of frequency bands F.
    fmin, fmax : float
        Lowest and highest band (for logmel the outer edges of the filterbank, for gammatone the lowest and
        highest centre). ``fmax`` defaults to min(8000 Hz, sample_rate / 2) for logmel and min(8000 Hz,
        0.45 * sample_rate) for gammatone (whose centres must stay below Nyquist).
    window : float
        Length in seconds of the logmel analysis window (default 25 ms).
    floor_db : float
        Level of silence: the output is ``10 * log10(E + 10**(floor_db / 10))`` dB, a fixed floor (default
        -100 dB) so that every frame depends on its own samples only.
    resample : bool
        Whether to resample when ``sample_rate`` is not a whole multiple of ``frame_rate`` (see above).

    Returns
    -------
    stimulus : float32 ``(F, T)``
        Band power in dB, ``T = floor(n_samples / hop)`` (``n_samples`` after any resampling; a partial last
        frame is dropped). Frame t depends only on samples before ``(t+1) * hop``.
    freqs : float64 ``(F,)``
        Band centre frequencies in Hz, strictly increasing, within [fmin, fmax]; pass as ``Trials(freqs=...)``.
    """
    plan = _plan(waveform, sample_rate, frame_rate, kind, n_bands, fmin, fmax, window, floor_db, resample)
    energy, freqs = _logmel_energy(plan) if kind == "logmel" else _gammatone_energy(plan)
    stimulus = 10.0 * np.log10(energy + plan.floor)
    return np.ascontiguousarray(stimulus, dtype=np.float32), np.asarray(freqs, dtype=np.float64)


def load_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read an audio file (WAV, FLAC, OGG: whatever soundfile/libsndfile decodes).

    Returns ``(waveform, sample_rate)``: float64 samples scaled to [-1, 1], shape ``(n_samples,)`` for a mono
    file and ``(channels, n_samples)`` otherwise (the layout :func:`spectrogram` takes, the transpose of
    soundfile's). A missing path is a FileNotFoundError, a directory an IsADirectoryError, a file soundfile
    cannot decode or one without samples a ValueError; each names the path.
    """
    try:
        import soundfile
    except ImportError:
        raise ImportError(f"load_audio needs soundfile: {_INSTALL}") from None
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"audio file {path} is a directory; give a WAV, FLAC or OGG file")
    if not path.is_file():
        raise FileNotFoundError(f"audio file {path} does not exist")
    try:
        data, sample_rate = soundfile.read(str(path), dtype="float64", always_2d=True)  # (n_samples, channels)
    except (RuntimeError, soundfile.SoundFileError, EOFError) as error:  # LibsndfileError is a RuntimeError
        raise ValueError(
            f"{path} could not be decoded as audio (soundfile reads WAV, FLAC, OGG, ...): {error}"
        ) from None
    if data.shape[0] == 0:
        raise ValueError(f"audio file {path} holds no samples")
    waveform = data[:, 0].copy() if data.shape[1] == 1 else np.ascontiguousarray(data.T)
    return waveform, int(sample_rate)
