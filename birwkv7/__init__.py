"""Bidirectional RWKV-7 building blocks.

The WKV-7 operator (``wkv7``) lives in :mod:`birwkv7.ops` and depends on torch alone.
"""

from .ops import available_backends, wkv7

__all__ = ["available_backends", "wkv7"]

# --- layer / conversion exports (birwkv7/layer.py, birwkv7/convert.py) go below this line ---
