"""Command-line tools: qcc-train, qcc-generate."""
