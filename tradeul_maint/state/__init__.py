"""What the tool keeps in Redis: the status document, its store, the run lock and its lease."""
