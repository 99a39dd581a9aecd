"""Self-contained HTML reports with embedded plots."""
