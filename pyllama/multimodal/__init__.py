"""Images and audio for models with a multimodal projector (``mmproj``), through llama.cpp's libmtmd.

:class:`Projector` loads the mmproj file for a :class:`~pyllama.Model`; :class:`Media` holds one
image or audio clip; ``Projector.tokenize`` turns text and media into a :class:`MediaPrompt`,
which evaluates into a :class:`~pyllama.Context` and keeps prefix reuse exact.
"""

from .media import MAX_IMAGE_PIXELS, Media
from .projector import Projector, default_marker
from .prompt import MediaChunk, MediaPrompt, reusable_prefix

__all__ = ["MAX_IMAGE_PIXELS", "Media", "MediaChunk", "MediaPrompt", "Projector", "default_marker",
           "reusable_prefix"]
