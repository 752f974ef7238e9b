import sys

from currant.admin import main

sys.exit(main())
