"""One definition of a whole-number parameter, an option and a dtype name, and every layer uses it."""

import numpy as np
import pytest
import torch

from dstrf.analysis import complexity
from dstrf.models import LinearSTRF
from dstrf.validation import DTYPES, dtype_named, option, positive_int


@pytest.mark.parametrize("value", [5, 5.0, np.int64(5)])
def test_whole_numbers_are_accepted_alike_by_a_model_and_the_analysis(value):
    assert positive_int(value, "n") == 5
    assert LinearSTRF(4, 2, lags=value).lags == 5
    W = np.random.default_rng(0).standard_normal((12, 2, 4, 3))
    np.testing.assert_allclose(complexity(W, chunk_size=value), complexity(W))


@pytest.mark.parametrize("value", ["5", True, 5.5, 0, None])
def test_other_values_are_refused_alike_by_a_model_and_the_analysis(value):
    with pytest.raises(ValueError, match=r"lags must be an integer >= 1; got"):
        LinearSTRF(4, 2, lags=value)
    with pytest.raises(ValueError, match=r"chunk_size must be an integer >= 1; got"):
        complexity(np.zeros((12, 2, 4, 3)), chunk_size=value)


def test_messages_name_the_unit_and_the_minimum():
    with pytest.raises(ValueError, match=r"^lags must be a positive whole number of frames; got 0$"):
        positive_int(0, "lags", "frames")
    with pytest.raises(ValueError, match=r"^max_shift must be an integer >= 0; got -1$"):
        positive_int(-1, "max_shift", minimum=0)
    assert positive_int(0, "max_shift", minimum=0) == 0


def test_options_and_dtypes_have_one_list():
    assert option("last", "readout", ("last", "mean")) == "last"
    with pytest.raises(ValueError, match=r"^readout must be one of 'last', 'mean'; got 'first'$"):
        option("first", "readout", ("last", "mean"))
    assert dtype_named("float16") == (torch.float16, np.float16)
    with pytest.raises(ValueError, match=r"dtype must be one of 'float32', 'float16', 'float64'; got 'int8'"):
        dtype_named("int8")
    assert set(DTYPES) == {"float32", "float16", "float64"}
