"""``python -m llava_zh``: the same as the ``llava-zh`` command."""

import sys

from llava_zh.cli import main

sys.exit(main())
