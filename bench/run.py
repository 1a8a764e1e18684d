#!/usr/bin/env python3
"""The benchmark suite from a source checkout: ``python bench/run.py [options]``.

A thin wrapper around :func:`fastlstm.bench.main` (the same as ``fastlstm bench`` and
``python -m fastlstm.bench``); see bench/README.md and ``--help``.
"""

import sys

from fastlstm.bench import main

if __name__ == "__main__":
    sys.exit(main())
