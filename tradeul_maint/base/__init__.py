"""What every layer stands on, importing nothing of the tool: errors, redaction, JSON, files, /proc."""
