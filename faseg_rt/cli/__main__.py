"""`python -m faseg_rt.cli ...` is `faseg-rt ...`."""

import sys

from faseg_rt.cli.main import main

sys.exit(main())
