"""The optional libraries the metrics use, imported with a message that says how to
install them instead of an ImportError."""

from __future__ import annotations

import importlib
from typing import Any

from studio import UserError


def require(module: str, for_what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{for_what} needs {module.split('.')[0]}: pip install 'studio-media[eval]'") from None
