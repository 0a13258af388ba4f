"""MCP Streamable HTTP proxying: parsing, sessions, routing, upstreams and the seam."""
