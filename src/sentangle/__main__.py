import sys

from sentangle.cli import main

sys.exit(main())
