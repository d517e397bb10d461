"""What the controller knows of the network: links (authenticated LLDP), hosts and who may
claim what (claims, DHCP snooping), and forwarding over the switch graph."""
