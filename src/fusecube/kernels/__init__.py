"""Pure numpy reference and compiled (numba) kernels: Whittaker, seasons, ridge, guided; no xarray."""
