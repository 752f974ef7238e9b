import sys

from currant.cli import main

sys.exit(main())
