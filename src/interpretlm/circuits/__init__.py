"""Circuit analysis on the Hugging Face model itself.

One file per algorithm: :mod:`.patching` (activation patching), :mod:`.attribution_patching`
(attribution patching and EAP-IG), :mod:`.path_patching`, :mod:`.ablation`,
:mod:`.logit_lens`, :mod:`.discovery` (automatic circuit discovery); :mod:`.runner` and
:mod:`.sweep` are the batched replay engine they share, :mod:`.metric` normalises their effects
(and warns when clean and corrupted barely differ); pictures are drawn by :mod:`interpretlm.viz`.
"""

from __future__ import annotations

from .patching import PatchResult, patch
from .sweep import Patch, PatchingError

__all__ = ["Patch", "PatchResult", "PatchingError", "patch"]

from .attribution_patching import attribution_patch  # noqa: E402

__all__ += ["attribution_patch"]

from .ablation import AblationResult, ablate  # noqa: E402
from .logit_lens import LogitLensResult, logit_lens  # noqa: E402

__all__ += ["AblationResult", "LogitLensResult", "ablate", "logit_lens"]

from .path_patching import PathPatchResult, path_patch  # noqa: E402

__all__ += ["PathPatchResult", "path_patch"]

from .discovery import Circuit, discover_circuit  # noqa: E402

__all__ += ["Circuit", "discover_circuit"]

from .metric import NoiseWarning, normaliser  # noqa: E402

__all__ += ["NoiseWarning", "normaliser"]
