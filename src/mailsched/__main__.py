"""``python -m mailsched`` is the ``mailsched`` command."""

import sys

from mailsched.cli import main

sys.exit(main())
