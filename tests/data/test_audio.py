"""Audio to causal spectrograms (dstrf.data.audio): band placement, causal framing, resampling, files."""

import numpy as np
import pytest

from dstrf.data import Trials
from dstrf.data.audio import erb, erb_space, load_audio, spectrogram

soundfile = pytest.importorskip("soundfile")
pytest.importorskip("librosa")

KINDS = ["logmel", "gammatone"]
SR = 16000


def tone(freq, seconds=0.3, sample_rate=SR, amplitude=1.0):
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return amplitude * np.sin(2 * np.pi * freq * t)


@pytest.mark.parametrize("kind", KINDS)
def test_tone_peaks_in_band_nearest_its_frequency(kind):
    stimulus, freqs = spectrogram(tone(1000.0), SR, 100, kind=kind, n_bands=48)
    level = stimulus[:, 5:].mean(axis=1)  # after the onset
    nearest = int(np.argmin(np.abs(freqs - 1000.0)))
    assert int(np.argmax(level)) == nearest
    assert -6.0 < level[nearest] < -2.5  # a full-scale sine has mean square 0.5 = -3 dB at its band
    assert level[freqs > 4000].max() < level[nearest] - 30


@pytest.mark.parametrize("kind", KINDS)
def test_freqs_increase_within_fmin_fmax(kind):
    stimulus, freqs = spectrogram(tone(440.0, 0.1), SR, 100, kind=kind, n_bands=20, fmin=100.0, fmax=6000.0)
    assert stimulus.shape == (20, 10) and freqs.shape == (20,)
    assert np.all(np.diff(freqs) > 0)
    assert freqs[0] >= 100.0 and freqs[-1] <= 6000.0


def test_erb_scale_follows_glasberg_moore():
    assert erb(1000.0) == pytest.approx(24.7 * 5.37)
    centres = erb_space(100.0, 5000.0, 9)
    assert centres[0] == pytest.approx(100.0) and centres[-1] == pytest.approx(5000.0)
    numbers = 21.4 * np.log10(1 + 4.37e-3 * centres)
    np.testing.assert_allclose(np.diff(numbers), np.diff(numbers)[0])  # equal steps in ERB number


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("click", [1234, 1600])  # inside a frame, and on a frame's first sample
def test_click_changes_no_frame_that_ends_before_it(kind, click):
    hop = SR // 100
    silence = np.zeros(SR // 5)
    clicked = silence.copy()
    clicked[click] = 1.0
    quiet, _ = spectrogram(silence, SR, 100, kind=kind, n_bands=16)
    loud, _ = spectrogram(clicked, SR, 100, kind=kind, n_bands=16)
    first = click // hop  # the frame [first*hop, (first+1)*hop) holds the click
    np.testing.assert_array_equal(loud[:, :first], quiet[:, :first])  # frames ending at or before the click
    assert np.all(loud[:, first] > quiet[:, first] + 10)
    if kind == "logmel":  # the 25 ms window (400 samples) also reaches back from the frames that end after it
        win = 400
        changed = np.flatnonzero(np.any(loud != quiet, axis=0))
        np.testing.assert_array_equal(changed, np.arange(first, (click + win - hop) // hop + 1))


@pytest.mark.parametrize("kind", KINDS)
def test_frame_count_drops_partial_last_frame(kind):
    hop = SR // 100
    x = np.random.default_rng(0).standard_normal(10 * hop + 97)
    stimulus, _ = spectrogram(x, SR, 100, kind=kind, n_bands=8)
    assert stimulus.shape == (8, 10)
    y = x.copy()
    y[10 * hop :] = 0  # the dropped samples change nothing
    np.testing.assert_array_equal(spectrogram(y, SR, 100, kind=kind, n_bands=8)[0], stimulus)


@pytest.mark.parametrize("kind", KINDS)
def test_44k1_audio_at_100_frames_per_second(kind):
    x = tone(1000.0, seconds=0.205, sample_rate=44100)  # 9040 samples, hop 441: 20 whole frames
    stimulus, freqs = spectrogram(x, 44100, 100, kind=kind, n_bands=32)
    assert stimulus.shape == (32, len(x) // 441) == (32, 20)
    assert int(np.argmax(stimulus[:, 5:].mean(axis=1))) == int(np.argmin(np.abs(freqs - 1000.0)))


def test_low_gammatone_centres_at_44k1_stay_stable():
    # scipy's expanded 8th-order polynomial diverges under lfilter below ~100 Hz at 44.1 kHz
    stimulus, freqs = spectrogram(
        tone(60.0, 0.3, 44100), 44100, 100, kind="gammatone", n_bands=12, fmin=30.0, fmax=2000.0
    )
    level = stimulus[:, 10:].mean(axis=1)
    assert np.all(np.isfinite(stimulus)) and stimulus.max() < 0
    assert int(np.argmax(level)) == int(np.argmin(np.abs(freqs - 60.0)))


def test_rate_that_does_not_divide_is_resampled_or_an_error():
    x = tone(1000.0, 0.25, 22050)  # 22050 / 128 = 172.27 samples per frame
    with pytest.raises(ValueError, match=r"sample_rate 22050 Hz.*frame_rate 128 Hz.*22016 Hz"):
        spectrogram(x, 22050, 128, resample=False)
    stimulus, freqs = spectrogram(x, 22050, 128, n_bands=40)  # resampled to 22016 Hz = 172 * 128
    n_resampled = int(np.ceil(len(x) * 22016 / 22050))
    assert stimulus.shape == (40, n_resampled // 172)
    assert int(np.argmax(stimulus[:, 5:].mean(axis=1))) == int(np.argmin(np.abs(freqs - 1000.0)))


@pytest.mark.parametrize("kind", KINDS)
def test_blockwise_processing_matches_one_block(kind, monkeypatch):
    import dstrf.data.audio as audio

    x = np.random.default_rng(3).standard_normal(SR // 2)
    whole, _ = spectrogram(x, SR, 100, kind=kind, n_bands=8)
    monkeypatch.setattr(audio, "_BLOCK_FRAMES", 7)  # STFT frames per block
    monkeypatch.setattr(audio, "_CHUNK_SAMPLES", 3 * 160 + 5)  # gammatone samples per chunk: 3 frames
    np.testing.assert_allclose(spectrogram(x, SR, 100, kind=kind, n_bands=8)[0], whole, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_stereo_is_the_average_of_its_channels(kind):
    rng = np.random.default_rng(1)
    left, right = rng.standard_normal((2, SR // 10))
    stereo, _ = spectrogram(np.stack([left, right]), SR, 100, kind=kind, n_bands=8)
    mono, _ = spectrogram((left + right) / 2, SR, 100, kind=kind, n_bands=8)
    np.testing.assert_allclose(stereo, mono, atol=1e-4)
    assert not np.allclose(stereo, spectrogram(left, SR, 100, kind=kind, n_bands=8)[0], atol=0.1)
    with pytest.raises(ValueError, match=r"waveform\.T"):
        spectrogram(np.stack([left, right]).T, SR, 100, kind=kind)


def test_output_goes_into_trials_silence_included():
    stimulus, freqs = spectrogram(np.zeros(SR), SR, 100)
    assert stimulus.dtype == np.float32 and np.all(stimulus == np.float32(-100.0))  # the fixed floor
    talk, _ = spectrogram(tone(300.0, 0.8), SR, 100)
    trials = Trials([stimulus, talk], [np.zeros((2, 100)), np.ones((2, 80))], sfreq=100, freqs=freqs)
    assert trials.n_freqs == 64 and trials.lengths == [100, 80]
    np.testing.assert_array_equal(trials.freqs, freqs)


def test_bad_arguments_are_named():
    x = tone(1000.0, 0.1)
    with pytest.raises(ValueError, match="kind must be one of"):
        spectrogram(x, SR, 100, kind="mfcc")
    with pytest.raises(ValueError, match="fmax 9000 Hz is above the Nyquist frequency 8000 Hz"):
        spectrogram(x, SR, 100, fmax=9000)
    with pytest.raises(ValueError, match=r"gammatone centre frequencies must lie in \(0, 8000\)"):
        spectrogram(x, SR, 100, kind="gammatone", fmax=8000)
    with pytest.raises(ValueError, match="fewer than one frame"):
        spectrogram(x[:100], SR, 100)
    bad = x.copy()
    bad[7] = np.nan
    with pytest.raises(ValueError, match=r"non-finite.*\(7,\)"):
        spectrogram(bad, SR, 100)
    with pytest.raises(ValueError, match="frame_rate must be a positive"):
        spectrogram(x, SR, 0)
    with pytest.raises(TypeError, match="fmin must be a number"):
        spectrogram(x, SR, 100, fmin="low")
    with pytest.raises(ValueError, match="fmax must be above fmin"):
        spectrogram(x, SR, 100, fmin=500, fmax=400)
    with pytest.raises(ValueError, match="contain no FFT bin"):
        spectrogram(x, SR, 1000, n_bands=128, window=0.001)


@pytest.mark.parametrize("suffix,subtype", [(".wav", "PCM_16"), (".flac", "PCM_24")])
def test_audio_file_round_trips(tmp_path, suffix, subtype):
    rng = np.random.default_rng(2)
    stereo = rng.uniform(-0.5, 0.5, (2, 1000))
    path = tmp_path / f"stereo{suffix}"
    soundfile.write(path, stereo.T, 22050, subtype=subtype)  # soundfile takes (n_samples, channels)
    waveform, rate = load_audio(path)
    assert rate == 22050 and waveform.shape == (2, 1000) and waveform.dtype == np.float64
    np.testing.assert_allclose(waveform, stereo, atol=1 / 2**15)
    soundfile.write(tmp_path / "mono.wav", stereo[0], 8000)
    mono, rate = load_audio(str(tmp_path / "mono.wav"))
    assert rate == 8000 and mono.shape == (1000,)
    assert spectrogram(mono, rate, 80, n_bands=8)[0].shape == (8, 10)


def test_missing_garbage_and_empty_files_name_the_path(tmp_path):
    missing = tmp_path / "nothere.wav"
    with pytest.raises(FileNotFoundError, match="nothere.wav"):
        load_audio(missing)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF not really a wave file" * 10)
    with pytest.raises(ValueError, match="garbage.wav could not be decoded"):
        load_audio(garbage)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0), 16000)
    with pytest.raises(ValueError, match="empty.wav holds no samples"):
        load_audio(empty)
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        load_audio(tmp_path)
