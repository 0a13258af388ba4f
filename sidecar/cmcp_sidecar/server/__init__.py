"""The gateway's HTTP server: /mcp, probes, metrics and the claim/audit endpoints."""
