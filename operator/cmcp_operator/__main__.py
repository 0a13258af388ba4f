"""``python -m cmcp_operator`` = ``cmcp-operator``."""

from .cli import main

raise SystemExit(main())
