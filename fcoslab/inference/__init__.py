"""Using a trained model: the predictor and the precision and layout rules (:mod:`.predictor`), prediction
of image files (:mod:`.predict`), tiled prediction (:mod:`.tiling`), torchvision's weights as a run
(:mod:`.torchvision_import`) and the ONNX export (:mod:`.onnx`).

May import the top-level helpers (runfolder, draw, ...), config, data, ops and modeling; never evaluation
or engine (which import this package).
"""

from .predictor import Precision, Predictor, choose_precision, resolve_device  # noqa: F401
from .tiling import predict_tiled  # noqa: F401
from .predict import predict_files  # noqa: F401
