"""What tells an operator a run happened, outside the terminal: metrics, pings, the log read back."""
