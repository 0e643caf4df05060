"""Input drivers: one package per input kind, all behind the `ReaderDriver` Protocol."""
