"""The tests: a package, so that they import what they share (tests.doubles,
tests.flowsim...) by its full name, and the harness as testbed."""
