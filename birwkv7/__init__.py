"""Bidirectional RWKV-7 building blocks.

The WKV-7 operator (``wkv7``, :mod:`birwkv7.ops`) and the time-mix layer depend on torch alone. What plugs
into NeMo stays in submodules so `import birwkv7` needs nothing else: :mod:`birwkv7.convert`
(`convert_to_birwkv7`, `restore`) and :mod:`birwkv7.nemo_encoder`. Long-audio transcription, which works
with any model, is the recipe's (:mod:`enhi.long_audio`, `transcribe_long.py`).
"""

from .layer import BiRWKV7Context, BiRWKV7TimeMix, reverse_valid
from .ops import available_backends, wkv7

__all__ = [
    "BiRWKV7Context",
    "BiRWKV7TimeMix",
    "available_backends",
    "reverse_valid",
    "wkv7",
]
