"""The ONNX deployment: export and its checks against fcoslab (:mod:`.export`, :mod:`.check`), the file's
contract and metadata (:mod:`.contract`), the traceable decode and preprocessing (:mod:`.decode`,
:mod:`.preprocess`) and an onnxruntime predictor (:mod:`.predictor`).

May import what :mod:`fcoslab.inference` may, and :mod:`fcoslab.inference.predictor`.
"""

from .export import export_onnx  # noqa: F401
from .predictor import OnnxPredictor  # noqa: F401
