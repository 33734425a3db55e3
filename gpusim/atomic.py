"""All-or-nothing output folders: a run that fails leaves no half-written results."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replaced_dir(out: Path):
    """Yield a staging folder beside `out`; on success it replaces `out` whole, on any error it is removed
    and `out` (with its previous results, if any) is left untouched."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield staging
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
