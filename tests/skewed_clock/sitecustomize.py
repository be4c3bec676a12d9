"""On PYTHONPATH of a member process (tests/test_fleet.py): its wall clock runs
HOTSWAP_TEST_CLOCK_SKEW seconds off the machine's, as another host's may."""

import os
import time

_skew = float(os.environ.get("HOTSWAP_TEST_CLOCK_SKEW", "0") or 0)
if _skew:
    _real, _real_ns = time.time, time.time_ns
    time.time = lambda: _real() + _skew
    time.time_ns = lambda: _real_ns() + int(_skew * 1e9)
