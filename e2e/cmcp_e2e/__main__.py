"""``python -m cmcp_e2e {build,up,down,env}``: see :mod:`cmcp_e2e.cli`."""

from cmcp_e2e.cli import main

raise SystemExit(main())
