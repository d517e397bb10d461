"""The domain: policy, requests checked into decisions, the planner that turns an action into
the narrowest flow rules, the switch pipeline and desired state. Pure: no I/O, no threads."""
