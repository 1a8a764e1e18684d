"""``python -m fastlstm.bench``: the same as ``fastlstm bench``."""

import sys

from . import main

sys.exit(main())
