import sys

from hotswapd.daemon.main import main

sys.exit(main())
