"""One encode request's answer as the client hands it out: the vectors as a view of the
reply frame (numpy only when asked for), and which model, version and fingerprint made them."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from hotswapd.errors import ProtocolError
from hotswapd.wire.protocol import VECTOR_DTYPE

if TYPE_CHECKING:
    import numpy as np

_digits = "{:.9g}".format  # 9 significant digits: the fewest that round-trip every float32


def _float(value: float) -> str:
    """A float's JSON text, always a float: "-0" would read back as the integer 0, losing the
    sign (and "1" reads as an integer to typed readers)."""
    text = _digits(value)
    return text if "." in text or "e" in text else text + ".0"

# From this many rows a reply is written through numpy and orjson (7x faster than a Python
# float each: 2,000 x 384 took 182 ms, and on 2 cores that time is taken from the daemon);
# below it, numpy's import (~0.1 s) would cost more than it saves.
FAST_JSON_ROWS = 32


class EncodeResult:
    """Embeddings of one request, with the model and version that produced them."""

    def __init__(self, result: dict[str, Any], buffer: memoryview) -> None:
        if result.get("dtype") != VECTOR_DTYPE:
            raise ProtocolError(f"unexpected vector dtype {result.get('dtype')!r}")
        self.model: str = result["model"]
        self.version: str = result["version"]
        self.fingerprint: str | None = result.get("fingerprint")
        self.dim: int = int(result["dim"])
        self.count: int = int(result["count"])
        self.cached: int = int(result.get("cached", 0))  # how many rows the daemon's cache served
        # Texts over the version's maximum tokens: cut, or averaged over windows (long_text).
        self.truncated: int = int(result.get("truncated", 0))
        self.chunked: int = int(result.get("chunked", 0))
        self.members: list[dict[str, Any]] | None = result.get("members")  # an ensemble's: model, version, fingerprint, dim, weight
        # With ranges asked for: the version's int8/uint8 calibration (2 x dim) and its fingerprint.
        self.ranges: list[list[float]] | None = result.get("ranges")
        self.calibration: str | None = result.get("calibration")
        # A fleet member's: the fleet change (etcd revision) this request was routed under.
        self.generation: int | None = result.get("generation") if isinstance(result.get("generation"), int) else None
        if len(buffer) != self.count * self.dim * 4:
            raise ProtocolError(f"vector frame holds {len(buffer)} bytes, expected {self.count}x{self.dim} float32")
        self.buffer = buffer

    def __len__(self) -> int:
        return self.count

    @property
    def embeddings(self) -> np.ndarray:
        """``count x dim`` float32 array viewing the reply frame (read-only, no copy)."""
        import numpy as np

        vectors = np.frombuffer(self.buffer, dtype=VECTOR_DTYPE).reshape(self.count, self.dim)
        vectors.flags.writeable = False  # several views may share the frame; copy to modify
        return vectors

    def compact(self, dtype: str) -> np.ndarray:
        """The rows as ``dtype`` (float32, float16, int8, uint8, binary, ubinary), as
        sentence-transformers' ``quantize_embeddings`` makes them; int8 and uint8 with the
        version's calibration ranges (encode with ``ranges=True``)."""
        import numpy as np

        from hotswapd.wire.compact import CALIBRATED, quantize

        if dtype in CALIBRATED and self.ranges is None:
            raise ProtocolError(f"{dtype} needs the version's calibration: encode with ranges=True")
        return quantize(self.embeddings, dtype, np.asarray(self.ranges, dtype=np.float32) if dtype in CALIBRATED else None)

    def rows(self) -> list[list[float]]:
        """The vectors as Python lists, without numpy (the CLI's fast path)."""
        values = self.buffer.cast("B").cast("f")
        if sys.byteorder != "little":
            import array

            swapped = array.array("f", values)
            swapped.byteswap()
            values = memoryview(swapped)
        dim = self.dim
        return [values[i * dim : (i + 1) * dim].tolist() for i in range(self.count)]

    def json_rows(self) -> list[bytes]:
        """Each vector as a JSON array that reads back as the same float32 values: orjson's
        shortest float32 text for a reply of many rows, 9 significant digits otherwise."""
        if self.count >= FAST_JSON_ROWS and sys.byteorder == "little":  # orjson takes native-endian arrays only
            try:
                import orjson
            except ImportError:
                pass
            else:
                return [orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY) for row in self.embeddings]
        return [("[" + ",".join(map(_float, row)) + "]").encode() for row in self.rows()]
