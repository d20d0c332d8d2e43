"""``python -m postroom``: the same as the ``postroom`` command."""

from postroom.cli import main

raise SystemExit(main())
