"""Pure planning: the trading calendar, the planner, the order tasks start in, duration trends."""
