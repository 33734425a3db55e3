"""On-disk cache of simulation results, keyed by everything a result depends on.

The key hashes the kernel name, the problem, the full hardware spec, the options, exact/folded, the L2 start and a
fingerprint of the model's own source (gpusim/ and the kernels), so a changed model never serves a stale
result. Entries are pickled Results under `.gpusim_cache/` in the working directory (or $GPUSIM_CACHE_DIR).
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import tempfile
from pathlib import Path


@functools.lru_cache(maxsize=1)
def model_fingerprint() -> str:
    """Hash of the simulator's and kernels' source files."""
    import gpusim
    import gpusim.kernels

    digest = hashlib.sha256()
    for package in (gpusim, gpusim.kernels):
        root = Path(package.__file__).parent
        for path in sorted(root.rglob("*.py")):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_dir() -> Path:
    return Path(os.environ.get("GPUSIM_CACHE_DIR", ".gpusim_cache"))


def point_key(kernel: str, problem, hardware, options: dict, exact: bool, l2_start: str = "empty") -> str:
    payload = repr((kernel, problem, sorted(vars(hardware).items(), key=lambda kv: kv[0]),
                    sorted((options or {}).items()), exact, l2_start, model_fingerprint()))
    return hashlib.sha256(payload.encode()).hexdigest()


def load(key: str):
    path = cache_dir() / f"{key}.pkl"
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh)
    except (OSError, pickle.PickleError, EOFError, AttributeError):
        return None


def store(key: str, result) -> None:
    directory = cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(result, fh)
        os.replace(tmp, directory / f"{key}.pkl")
    except OSError:
        pass  # a cache that cannot be written only costs time
