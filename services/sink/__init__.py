"""sink: append results durably, one output line per input record."""
