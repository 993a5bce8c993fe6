"""``uniopt.keras``: every uniopt optimizer as a Keras 3 optimizer (``keras.optimizers.
Optimizer``), for ``model.compile(optimizer=uniopt.keras.AdamW(...))``.

This is :mod:`uniopt.backends.keras`, the framework-facing module, under its public
name: importing it imports keras (``import uniopt`` does not) and registers the classes
with Keras's serialization, so import it before ``keras.models.load_model`` reads a
model saved with one of them. Where Keras 3 cannot be imported, importing this module
still works and using it raises that ImportError.
"""

from typing import Any

try:
    from uniopt.backends.keras import *  # noqa: F403
    from uniopt.backends.keras import __all__  # noqa: F401
except ImportError as error:  # no usable Keras 3 here: the error comes on use
    _missing = error
    __all__: list[str] = []  # type: ignore[no-redef]

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(f"uniopt.keras.{name}: {_missing}") from _missing
