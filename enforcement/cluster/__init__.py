"""Several instances: the leader lease in the shared database, and calls sent on to the leader."""
