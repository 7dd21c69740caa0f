"""Redis plumbing on plain values: connections, the first exchange, the embedded server, keys, WAIT."""
