"""STSUN: one network for remote-sensing dense prediction."""
