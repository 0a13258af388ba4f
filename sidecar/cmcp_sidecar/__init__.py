"""cmcp_sidecar: the Confidential MCP gateway (``cmcp``), an MCP policy enforcement point."""

__version__ = "0.1.0.dev0"
