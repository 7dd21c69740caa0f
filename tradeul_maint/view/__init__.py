"""Pure operator views of what the store read: sessions, cycles and attempts, the grid, where from."""
