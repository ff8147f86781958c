"""Generated data sets written as COCO files: the shapes set (:mod:`.shapes`) and the COCO-like set of
COCO's object counts and sizes (:mod:`.cocolike`).

Imports only the top-level helpers (errors, files) and :mod:`fcoslab.config`.
"""

from .cocolike import make_cocolike  # noqa: F401
from .shapes import ensure_shapes, make_shapes  # noqa: F401
