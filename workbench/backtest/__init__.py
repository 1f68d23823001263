"""Multi-symbol minute-bar backtesting with numba kernels."""
