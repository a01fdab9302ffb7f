import sys

from decinv.cli import main

sys.exit(main())
