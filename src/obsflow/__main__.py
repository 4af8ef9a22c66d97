"""``python -m obsflow`` is the ``obsflow`` command."""

from obsflow.launch import main

raise SystemExit(main())
