"""Fingerprints: which model made a cache, and which base an adapter or cache belongs to.

A fingerprint is cheap (size, first and last MiB of each weight file) and changes when the
weights do. `check_made_for` is the one rule every step uses to refuse inputs made with
another model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

from ..errors import D2OError

# Keys under which manifests and configs have named the model that made them, newest first.
_KEYS = ("model_fingerprint", "base_model_fingerprint", "base_fingerprint")


def file_fingerprint(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 over size, first and last MiB: cheap on a 4 GB file, and changes when weights do."""
    path = Path(path)
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(chunk))
        if size > chunk:
            f.seek(max(chunk, size - chunk))
            h.update(f.read(chunk))
    return h.hexdigest()[:16]


def model_fingerprint(model_dir: str | Path) -> str:
    files = sorted(Path(model_dir).glob("*.safetensors"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(file_fingerprint(f).encode())
    return h.hexdigest()[:16]


def fingerprint_of(meta: dict) -> Optional[str]:
    """The model fingerprint a manifest or config was made with, under any key it has used."""
    if not isinstance(meta, dict):
        return None
    for scope in (meta, meta.get("d2o"), meta.get("model")):
        if not isinstance(scope, dict):
            continue
        for key in (*_KEYS, "fingerprint") if scope is meta.get("model") else _KEYS:
            if scope.get(key):
                return str(scope[key])
    return None


def check_made_for(path, meta: dict, fingerprint: str, what: str = "this file") -> None:
    """Refuse META (read from PATH) when it was made with another model than FINGERPRINT."""
    made = fingerprint_of(meta)
    if made is None:
        raise D2OError(
            f"{path}: field 'model_fingerprint': missing, cannot tell which model made {what}"
        )
    if made != fingerprint:
        raise D2OError(
            f"{path}: {what} was made with another model (fingerprint {made}, the model given has "
            f"{fingerprint}); redo it with this model, or pass the model it was made with"
        )
