"""`python -m resnets.data.shards SRC DST [--shard-size 1GB]` (see resnets.data.shards)."""

import sys

from . import main

sys.exit(main())
