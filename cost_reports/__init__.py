"""PoseHub's cost reporter service (see the cost-reporting issue)."""
