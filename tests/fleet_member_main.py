"""`python -m tests.fleet_member_main ARGS`: hotswapd with the fake backend registered, for
fleet tests that need real processes (kill -9) without torch."""

import sys

from hotswapd import backends

backends.BUILTIN["fake"] = "tests.fakebackend"

from hotswapd.daemon.main import main  # noqa: E402

sys.exit(main())
