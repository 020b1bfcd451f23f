"""``python -m llava_zh.cli``: the same as the ``llava-zh`` command."""

import sys

from . import main

sys.exit(main())
