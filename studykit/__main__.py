"""``python -m studykit`` is the ``studykit`` command."""

import sys

from studykit.cli import main

sys.exit(main())
