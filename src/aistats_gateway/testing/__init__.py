"""Tools for testing against the gateway and for testing the gateway: a fault-injecting upstream."""
