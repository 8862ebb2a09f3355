"""Stand-in encoders shared by the engine's and the gradient maps' tests."""

from torch import nn


class Centered(nn.Module):
    """Not causal: a centred convolution sees the future."""

    receptive_field = 5

    def __init__(self, n_freqs: int, n_outputs: int):
        super().__init__()
        self.n_freqs = n_freqs
        self.conv = nn.Conv1d(n_freqs, n_outputs, 5, padding=2)

    def forward(self, x):
        return self.conv(x)


class WithoutWindows(nn.Module):
    """An encoder that cannot run without its causal padding (no ``causal_padding`` argument): the engines
    must fall back to its plain forward pass."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.receptive_field, self.n_freqs = inner, inner.receptive_field, inner.n_freqs

    def forward(self, x):
        return self.inner(x)


class Overflow(nn.Module):
    """Causal (receptive field 3), finite weights, but ``(1e19 * conv(x))**2`` overflows float32 once the
    stimulus is large (|x| of about 10 in every band): a model whose results are not finite on finite input."""

    receptive_field = 3

    def __init__(self, n_freqs: int, n_outputs: int):
        super().__init__()
        self.n_freqs = n_freqs
        self.conv = nn.Conv1d(n_freqs, n_outputs, 3, bias=False)
        nn.init.constant_(self.conv.weight, 0.01)

    def forward(self, x):
        return (1e19 * self.conv(nn.functional.pad(x, (2, 0)))) ** 2
