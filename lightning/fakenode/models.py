"""Models of the simulated node live here (built with the fake backend)."""
