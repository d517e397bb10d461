"""The decision lifecycle: decide, store, install, confirm, expire, lift; the ledger of live
enforcements, group commit, reconciling switches, the schedule and the lifecycle's metrics."""
