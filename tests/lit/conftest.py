import numpy as np
import pytest

from dstrf.data import Trials


@pytest.fixture
def small_trials():
    """Five short trials of different lengths: 8 bands, 2 channels, a linear response plus noise."""
    rng = np.random.default_rng(0)
    stimuli, responses = [], []
    kernel = rng.standard_normal((2, 8, 6))
    for length in (120, 100, 140, 90, 110):
        x = rng.random((8, length)) * 3
        padded = np.pad(x, ((0, 0), (5, 0)))
        y = np.stack([sum(kernel[n, :, k] @ padded[:, 5 - k : 5 - k + length] for k in range(6)) for n in range(2)])
        stimuli.append(x)
        responses.append(y + 0.1 * rng.standard_normal(y.shape))
    return Trials(stimuli, responses, sfreq=100.0, channel_names=["a", "b"])
