"""Fitted estimators on disk in a format that cannot run code when read.

Pickle (and joblib, which is pickle) runs whatever callable a file names while it loads, so a
replaced model file is a replaced program. This module stores scikit-learn objects with ``skops``
(https://skops.readthedocs.io, ``skops.io``): a zip of JSON schema plus numpy arrays, rebuilt from
an audited tree. Before anything is constructed every type the file names is compared with
:data:`TRUSTED_TYPES`; one that is not listed refuses the file (no blanket ``trusted=True``).
XGBoost boosters inside the pipelines are held as XGBoost's own serialised model bytes (its
UBJSON model format, ``Booster.__getstate__``/``XGBoosterUnserializeFromBuffer``), not pickled.

Used for the bundle's classifiers, its SHAP estimators and the training cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eusdx.durable import atomic_write_bytes
from eusdx.errors import DataError

__all__ = ["TRUSTED_TYPES", "UnsafeModelFile", "dump_models", "dumps_models", "load_models", "untrusted_types"]

#: Types that skops does not trust on its own and that eusdx's pipelines contain. Each is plain
#: data once rebuilt: a dtype, scikit-learn's calibration and tree internals, eusdx's own mRMR
#: selectors and lesion-grouped Platt SVM (code in this repository), and XGBoost's estimator and booster (native model bytes).
TRUSTED_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.tree._tree.Tree",
    "models.classifiers.GroupedPlattSVC",
    "models.classifiers.LassoSelector",
    "models.classifiers.MRMRSelector",
    "xgboost.core.Booster",
    "xgboost.sklearn.XGBClassifier",
)


class UnsafeModelFile(DataError):
    """A model file names a type outside :data:`TRUSTED_TYPES`, or is not a skops file."""


def dumps_models(obj: Any) -> bytes:
    """``obj`` (estimators, dicts and lists of them) as skops bytes."""
    import skops.io as sio

    return bytes(sio.dumps(obj))


def dump_models(obj: Any, path: str | Path) -> str:
    """Write ``obj`` to ``path`` atomically; return the file's SHA-256."""
    return atomic_write_bytes(path, dumps_models(obj))


def untrusted_types(data: bytes) -> list[str]:
    """Types named by ``data`` that are neither trusted by skops nor in :data:`TRUSTED_TYPES`.

    Raises
    ------
    UnsafeModelFile
        ``data`` is not a skops file (a pickle, say).
    """
    import skops.io as sio

    try:
        found = sio.get_untrusted_types(data=data)
    except Exception as exc:  # zipfile.BadZipFile, KeyError, JSON errors: not a skops archive
        raise UnsafeModelFile(f"not a skops model file ({type(exc).__name__}: {exc})") from exc
    return sorted(set(found) - set(TRUSTED_TYPES))


def load_models(path: str | Path) -> Any:
    """Read a skops model file; nothing in it runs before every type was checked.

    Raises
    ------
    UnsafeModelFile
        Not a skops file, or it names a type outside :data:`TRUSTED_TYPES` (the message lists
        them); nothing was constructed.
    OSError
        The file cannot be read.
    """
    import skops.io as sio

    data = Path(path).read_bytes()
    bad = untrusted_types(data)
    if bad:
        raise UnsafeModelFile(f"{Path(path).name} names types that are not trusted: {', '.join(bad)}")
    try:
        return sio.loads(data, trusted=list(TRUSTED_TYPES))
    except Exception as exc:  # a damaged archive fails in many ways; name the file
        raise UnsafeModelFile(f"{Path(path).name} cannot be read ({type(exc).__name__}: {exc})") from exc
