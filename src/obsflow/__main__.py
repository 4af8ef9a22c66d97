"""``python -m obsflow`` is the ``obsflow`` command."""

from obsflow.cli import main

raise SystemExit(main())
