"""Old names of the key types, kept for one release: a module ``__getattr__`` that warns.

The old name is the same class object as the new one, so ``isinstance`` checks and existing
code keep working; only the lookup of the old name warns (``DeprecationWarning``).
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, Callable, Mapping


def module_getattr(module_name: str, namespace: Mapping[str, Any], renamed: Mapping[str, str],
                   short_path: str = "") -> Callable[[str], Any]:
    """A module ``__getattr__`` that returns ``namespace[renamed[old]]`` for an old name, with
    a DeprecationWarning, and raises AttributeError for any other missing name.

    Args:
        module_name: the module's ``__name__`` (for messages).
        namespace: the module's ``globals()``.
        renamed: old name -> new name.
        short_path: the documented short path that forwards its lookups here
            (``shardseal.kms``): the warning then names the user's line, not the short path's.
    """

    def __getattr__(name: str) -> Any:
        new = renamed.get(name)
        if new is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        stacklevel = 2
        caller = sys._getframe(1)
        if caller.f_globals.get("__name__") == short_path:
            stacklevel = 3
        shown = short_path or module_name
        warnings.warn(f"{shown}.{name} is deprecated and will be removed in the next release: "
                      f"use {new} (the same class)", DeprecationWarning, stacklevel=stacklevel)
        return namespace[new]

    return __getattr__


def force_flag(force: bool, overwrite: object, where: str) -> bool:
    """The one overwrite flag, ``force``, with the old spelling ``overwrite=`` still taken
    (a DeprecationWarning; either one true means overwrite).

    Args:
        force: the ``force`` argument.
        overwrite: the deprecated ``overwrite`` argument; None when not given.
        where: the function's name, for the warning.
    """
    if overwrite is None:
        return bool(force)
    warnings.warn(f"{where}(overwrite=...) is deprecated and will be removed in the next release: "
                  "use force=...", DeprecationWarning, stacklevel=3)
    return bool(force) or bool(overwrite)
