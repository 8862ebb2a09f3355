"""Manifests of audio + response files to Trials (dstrf.data.manifest): shapes, trimming, resampling, cache, errors."""

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from dstrf.data import audio
from dstrf.data.audio import load_audio, spectrogram
from dstrf.data.manifest import load_manifest, manifest_files

soundfile = pytest.importorskip("soundfile")
pytest.importorskip("librosa")
pytest.importorskip("pandas")

SR = 16000
BANDS = 16  # few bands: fast, and still more than the responses' channels


def write_wav(path: Path, seconds: float, seed: int = 0, sample_rate: int = SR) -> Path:
    noise = 0.1 * np.random.default_rng(seed).standard_normal(round(seconds * sample_rate))
    soundfile.write(str(path), noise, sample_rate)
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    columns = list(dict.fromkeys(c for r in rows for c in r))
    lines = [",".join(columns)] + [",".join(str(r.get(c, "")) for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def response(n_frames: int, n_channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n_channels, n_frames))


@pytest.fixture
def two_trials(tmp_path):
    """a.wav (1 s, 100 frames) and b.wav (0.5 s, 50 frames) with (3, T) responses, and their CSV manifest."""
    write_wav(tmp_path / "a.wav", 1.0, seed=1)
    write_wav(tmp_path / "b.wav", 0.5, seed=2)
    np.save(tmp_path / "a.npy", response(100, seed=3))
    np.save(tmp_path / "b.npy", response(50, seed=4))
    rows = [
        {"audio": "a.wav", "response": "a.npy", "name": "first"},
        {"audio": "b.wav", "response": "b.npy", "name": "second"},
    ]
    return write_csv(tmp_path / "manifest.csv", rows)


def load(path, **kwargs):
    return load_manifest(path, n_bands=BANDS, **kwargs)


def test_csv_manifest_gives_trials_with_spectrograms_of_the_audio(two_trials):
    trials = load(two_trials)
    assert len(trials) == 2 and trials.names == ["first", "second"]
    assert trials.sfreq == 100.0 and trials.lengths == [100, 50]
    assert trials.n_freqs == BANDS and trials.n_channels == 3 and trials.repeats is None
    expected, freqs = spectrogram(*load_audio(two_trials.parent / "a.wav"), 100.0, n_bands=BANDS)
    np.testing.assert_allclose(trials.freqs, freqs)
    np.testing.assert_allclose(trials[0].stimulus.numpy(), expected)
    np.testing.assert_allclose(trials[1].response.numpy(), response(50, seed=4), rtol=1e-6)


def test_spreadsheet_csv_with_bom_spaces_and_numeric_names(two_trials):
    text = "audio, response, name\na.wav, a.npy, 007\nb.wav, b.npy, 8\n"
    two_trials.write_bytes(text.encode("utf-8-sig"))  # as Excel writes "CSV UTF-8"
    assert load(two_trials).names == ["007", "8"]


def test_yaml_manifest_reads_npz_h5_keys_repeats_and_paths_relative_to_it(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_wav(data / "tone.wav", 0.3)
    write_wav(data / "noise.wav", 0.2, seed=5)
    np.savez(data / "r.npz", other=np.zeros(3), resp=response(30, 2))
    with h5py.File(data / "r.h5", "w") as f:
        f.create_dataset("session1/resp", data=response(20, 2, seed=6))
    np.save(data / "rep_tone.npy", np.zeros((4, 2, 30)))
    np.save(data / "rep_noise.npy", np.ones((4, 2, 20)))
    (tmp_path / "m.yaml").write_text(
        "- {audio: data/tone.wav, response: data/r.npz, key: resp, repeats: data/rep_tone.npy}\n"
        "- audio: data/noise.wav\n  response: data/r.h5\n  key: session1/resp\n  repeats: data/rep_noise.npy\n"
    )
    trials = load(tmp_path / "m.yaml")
    assert trials.names == ["tone", "noise"]  # default names: the audio file's stem
    assert trials.lengths == [30, 20] and trials.n_channels == 2
    assert [tuple(r.shape) for r in trials.repeats] == [(4, 2, 30), (4, 2, 20)]
    np.testing.assert_allclose(trials[1].response.numpy(), response(20, 2, seed=6), rtol=1e-6)


@pytest.mark.parametrize("n_response", [103, 97])  # 0.03 s longer / shorter than the 100 spectrogram frames
def test_lengths_within_tolerance_are_trimmed_at_the_end(tmp_path, n_response):
    write_wav(tmp_path / "a.wav", 1.0)
    y = response(n_response)
    np.save(tmp_path / "a.npy", y)
    trials = load(write_csv(tmp_path / "m.csv", [{"audio": "a.wav", "response": "a.npy"}]), tolerance=0.05)
    n = min(n_response, 100)
    assert trials.lengths == [n]
    full, _ = spectrogram(*load_audio(tmp_path / "a.wav"), 100.0, n_bands=BANDS)
    np.testing.assert_allclose(trials[0].stimulus.numpy(), full[:, :n])  # frame 0 stays the audio's start
    np.testing.assert_allclose(trials[0].response.numpy(), y[:, :n], rtol=1e-6)


def test_length_beyond_tolerance_names_row_lengths_and_tolerance(tmp_path):
    write_wav(tmp_path / "a.wav", 1.0)
    np.save(tmp_path / "a.npy", response(110))
    manifest = write_csv(tmp_path / "m.csv", [{"audio": "a.wav", "response": "a.npy", "name": "late"}])
    with pytest.raises(
        ValueError,
        match=r"row 0 \(line 2\) \('late'\).*110 frames \(1\.100 s\).*100 frames "
        r"\(1\.000 s\).*tolerance 0\.05 s",
    ):
        load(manifest, tolerance=0.05)
    assert load(manifest, tolerance=0.1).lengths == [100]


def test_transposed_response_is_named_in_the_length_error(tmp_path):
    write_wav(tmp_path / "a.wav", 1.0)
    np.save(tmp_path / "a.npy", response(100).T)
    with pytest.raises(ValueError, match=r"looks transposed"):
        load(write_csv(tmp_path / "m.csv", [{"audio": "a.wav", "response": "a.npy"}]))


def test_sfreq_column_resamples_the_response_to_the_frame_rate(tmp_path):
    write_wav(tmp_path / "a.wav", 1.0)
    t200 = np.arange(200) / 200.0
    np.save(tmp_path / "a.npy", np.sin(2 * np.pi * 2.0 * t200)[None])  # 2 Hz sine at 200 Hz for 1 s
    trials = load(write_csv(tmp_path / "m.csv", [{"audio": "a.wav", "response": "a.npy", "sfreq": 200}]))
    assert trials.lengths == [100]
    t100 = np.arange(100) / 100.0
    # resample_poly is zero-phase: the sine keeps its phase (away from the edges, where its filter sees zeros)
    np.testing.assert_allclose(trials[0].response.numpy()[0, 10:90], np.sin(2 * np.pi * 2.0 * t100)[10:90], atol=0.02)


@pytest.fixture
def count_spectrograms(monkeypatch):
    calls = []
    original = audio.spectrogram

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(audio, "spectrogram", counting)
    return calls


def test_cache_computes_each_spectrogram_once_and_again_when_audio_or_parameters_change(two_trials, count_spectrograms):
    first = load(two_trials)
    assert len(count_spectrograms) == 2
    cache = two_trials.parent / ".dstrf_cache"
    assert len(list(cache.glob("*.npz"))) == 2 and not list(cache.glob("*.tmp"))
    second = load(two_trials, frame_rate=100, window=0.025)  # the same front end, spelt differently
    assert len(count_spectrograms) == 2
    np.testing.assert_array_equal(second[0].stimulus.numpy(), first[0].stimulus.numpy())
    np.testing.assert_array_equal(second.freqs, first.freqs)
    load(two_trials, fmin=100.0)  # another parameter: both recomputed
    assert len(count_spectrograms) == 4
    write_wav(two_trials.parent / "b.wav", 0.5, seed=99)  # new content under the same name: b recomputed
    changed = load(two_trials)
    assert len(count_spectrograms) == 5
    assert not np.allclose(changed[1].stimulus.numpy(), first[1].stimulus.numpy())
    load(two_trials, cache=False)
    assert len(count_spectrograms) == 7


def test_corrupt_cache_file_is_recomputed_and_replaced(two_trials, count_spectrograms, tmp_path):
    cache_dir = tmp_path / "elsewhere"
    first = load(two_trials, cache_dir=cache_dir)
    files = sorted(cache_dir.glob("*.npz"))
    files[0].write_bytes(b"not a zip archive")
    with pytest.warns(UserWarning, match="unusable"):
        again = load(two_trials, cache_dir=cache_dir)
    assert len(count_spectrograms) == 3
    np.testing.assert_array_equal(again[0].stimulus.numpy(), first[0].stimulus.numpy())
    with np.load(files[0]) as data:  # replaced by a good file
        assert data["stimulus"].shape[0] == BANDS
    load(two_trials, cache_dir=cache_dir)
    assert len(count_spectrograms) == 3


def test_cache_file_of_another_key_is_not_trusted(two_trials, count_spectrograms):
    load(two_trials)
    cache = sorted((two_trials.parent / ".dstrf_cache").glob("*.npz"))
    shutil.copyfile(cache[0], cache[1])  # one file now holds the other's spectrogram under its name
    with pytest.warns(UserWarning, match="key"):
        trials = load(two_trials)
    assert len(count_spectrograms) == 3
    assert trials.lengths == [100, 50]


def test_manifest_files_lists_every_file_once(tmp_path):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "- {audio: a.wav, response: r.npz, key: x, repeats: rep.npy}\n- {audio: a.wav, response: r.npz, key: y, "
        "repeats: /abs/rep2.npy, name: again}\n"
    )
    assert manifest_files(manifest) == [
        tmp_path / "a.wav",
        tmp_path / "r.npz",
        tmp_path / "rep.npy",
        Path("/abs/rep2.npy"),
    ]


def test_hydra_config_instantiates_load_manifest(two_trials):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        cfg = compose("train", overrides=["data=audio", f"data.trials.path={two_trials}", "data.trials.n_bands=8"])
    trials = instantiate(cfg.data.trials)
    assert trials.n_freqs == 8 and trials.names == ["first", "second"] and trials.sfreq == 100.0


# -- errors -----------------------------------------------------------------------------------------------------
def test_missing_column_names_it_the_row_and_the_columns_present(tmp_path):
    manifest = write_csv(tmp_path / "m.csv", [{"audio": "a.wav", "name": "x"}])
    with pytest.raises(ValueError, match=r"row 0 \(line 2\): no 'response' column.*present are \['audio', 'name'\]"):
        load(manifest)
    (tmp_path / "m.yaml").write_text("- {audio: a.wav, response: a.npy}\n- {response: b.npy}\n")
    with pytest.raises(ValueError, match=r"row 1: no 'audio' column.*present are \['response'\]"):
        load(tmp_path / "m.yaml")


def test_empty_cell_and_bad_sfreq_name_the_row(tmp_path):
    with pytest.raises(ValueError, match=r"row 1 \(line 3\): the 'response' cell is empty"):
        load(write_csv(tmp_path / "m.csv", [{"audio": "a.wav", "response": "a.npy"}, {"audio": "b.wav"}]))
    with pytest.raises(ValueError, match=r"row 0 .*'a'.*sfreq must be .*'fast'"):
        load(write_csv(tmp_path / "n.csv", [{"audio": "a.wav", "response": "a.npy", "sfreq": "fast"}]))


def test_missing_or_undecodable_audio_names_the_row_and_file(tmp_path):
    np.save(tmp_path / "a.npy", response(100))
    manifest = write_csv(tmp_path / "m.csv", [{"audio": "a.wav", "response": "a.npy", "name": "n1"}])
    with pytest.raises(FileNotFoundError, match=r"row 0 \(line 2\) \('n1'\): audio file .*a\.wav does not exist"):
        load(manifest)
    (tmp_path / "a.wav").write_bytes(b"RIFF but not really a wave file")
    with pytest.raises(ValueError, match=r"\('n1'\): .*a\.wav could not be decoded"):
        load(manifest)


def test_missing_response_and_ambiguous_npz_name_the_row_and_file(tmp_path):
    write_wav(tmp_path / "a.wav", 1.0)
    manifest = write_csv(tmp_path / "m.csv", [{"audio": "a.wav", "response": "gone.npy"}])
    with pytest.raises(FileNotFoundError, match=r"row 0 .*response file .*gone\.npy does not exist"):
        load(manifest)
    np.savez(tmp_path / "two.npz", x=response(100), y=response(100))
    with pytest.raises(ValueError, match=r"two\.npz holds arrays \['x', 'y'\]; name the one"):
        load(write_csv(tmp_path / "n.csv", [{"audio": "a.wav", "response": "two.npz"}]))
    with pytest.raises(ValueError, match=r"has no array 'z'.*\['x', 'y'\]"):
        load(write_csv(tmp_path / "k.csv", [{"audio": "a.wav", "response": "two.npz", "key": "z"}]))
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 100)))
    with pytest.raises(ValueError, match=r"shape \(2, 3, 100\); expected \(frames,\) or \(channels, frames\)"):
        load(write_csv(tmp_path / "c.csv", [{"audio": "a.wav", "response": "cube.npy"}]))


def test_unknown_manifest_type_and_arguments(tmp_path, two_trials):
    (tmp_path / "m.json").write_text("[]")
    with pytest.raises(ValueError, match=r"unknown manifest type '\.json'.*\.csv, \.tsv, \.yaml or \.yml"):
        load(tmp_path / "m.json")
    with pytest.raises(FileNotFoundError, match="manifest .*nothing.csv does not exist"):
        load(tmp_path / "nothing.csv")
    with pytest.raises(TypeError, match=r"\['hop'\] are not extra spectrogram arguments.*'window'"):
        load(two_trials, hop=3)
    with pytest.raises(ValueError, match="tolerance must be"):
        load(two_trials, tolerance=-1)


def test_unknown_column_warns(two_trials):
    text = two_trials.read_text().splitlines()
    two_trials.write_text("\n".join([text[0] + ",resposne"] + [line + ",x" for line in text[1:]]) + "\n")
    with pytest.warns(UserWarning, match=r"unknown column\(s\) \['resposne'\]"):
        load(two_trials)


def test_unwritable_cache_only_warns(two_trials, tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.warns(UserWarning, match="could not write spectrogram cache"):
        trials = load(two_trials, cache_dir=tmp_path / "a_file" / "cache")
    assert trials.lengths == [100, 50]


def test_audio_at_other_rates_needs_an_explicit_fmax(tmp_path):
    write_wav(tmp_path / "a.wav", 0.2)
    write_wav(tmp_path / "b.wav", 0.2, sample_rate=8000)  # default fmax: 8000 Hz for a, 4000 Hz (Nyquist) for b
    np.save(tmp_path / "r.npy", response(20))
    rows = [{"audio": "a.wav", "response": "r.npy"}, {"audio": "b.wav", "response": "r.npy"}]
    manifest = write_csv(tmp_path / "m.csv", rows)
    with pytest.raises(ValueError, match=r"row 1 .*'b'.*bands differ.*8000 Hz.*16000 Hz.*give fmax"):
        load(manifest)
    assert load(manifest, fmax=4000.0).lengths == [20, 20]
