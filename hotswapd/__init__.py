"""hotswap: a daemon that keeps sentence-embedding models warm, and its client.

``from hotswapd import Client`` is light: it imports ZeroMQ, not torch or numpy.
"""

__version__ = "0.1.0"

from hotswapd.client.connection import Client  # noqa: E402
from hotswapd.client.encode_result import EncodeResult  # noqa: E402
from hotswapd.errors import HotswapError  # noqa: E402

__all__ = ["Client", "EncodeResult", "HotswapError", "__version__"]
