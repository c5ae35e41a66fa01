"""Teachers write traces: the oracle for synthetic worlds (real model teachers come later)."""
