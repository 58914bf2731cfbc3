"""On-device scoring: the shared preprocessing and a thin ExecuTorch runtime wrapper.

Importing this package is light: numpy and Pillow only. The ExecuTorch runtime (which pulls
in torch) is imported when a :class:`Scorer` is first created, never by the preprocessing,
and nothing here imports training code, timm or transformers.
"""

from .camera import CameraFrame, frame_to_rgb
from .contract import ContractError, ModelContract
from .images import ImageLoadError, load_rgb
from .preprocess import PreprocessSpec
from .scorer import RuntimeUnavailableError, Scorer, ScoreResult

__all__ = ["CameraFrame", "ContractError", "ImageLoadError", "ModelContract", "PreprocessSpec",
           "RuntimeUnavailableError", "ScoreResult", "Scorer", "frame_to_rgb", "load_rgb"]
