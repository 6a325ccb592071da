"""The node's client of the registry (credentials now; enrolment and locality later)."""
