"""DHCP snooping: the trusted servers' replies read, and the binding table they keep."""
