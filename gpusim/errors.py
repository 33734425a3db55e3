"""Error types. An `InputError` is the user's mistake: the CLI prints its one-line message and exits 2."""


class InputError(ValueError):
    """Bad input (unknown preset or field, impossible size, a tile that does not fit). One line, no traceback."""


class DoesNotFitError(InputError):
    """The problem cannot run on this hardware (a tile exceeds SMEM, the tensors exceed HBM). In a sweep the
    point is reported as not fitting instead of stopping the run."""
