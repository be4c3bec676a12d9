"""A stand-in converter for the conversion cache (hotswapd.backends.support.export_cache): it writes
what a real one writes (a model file and check.json) in milliseconds, without torch.

    python -m tests.fakeconverter --mean 0.999 [--sleep S] [--fail] --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mean", type=float, default=0.999)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--fail", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    time.sleep(args.sleep)
    if args.fail:
        sys.stderr.write("conversion exploded\n")
        return 3
    args.out.mkdir(parents=True)
    (args.out / "model.bin").write_bytes(b"weights")
    (args.out / "check.json").write_text(json.dumps({"mean_cosine": args.mean, "min_cosine": args.mean, "sample_size": 21}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
