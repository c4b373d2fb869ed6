"""Architecture blocks, one family per file; each stage function is ``(x, cfg, ctx, name) -> x``."""
