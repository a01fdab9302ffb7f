"""``python -m decinv.bench ...``: the benchmark runner's command line (`decinv.bench.main`)."""

import sys

from decinv.bench import main

sys.exit(main())
