"""``activesynth serve``: chat panel and live dashboard (stdlib HTTP server, no external assets)."""
