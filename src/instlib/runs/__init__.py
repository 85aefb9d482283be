"""Profiles, work sharding and the papermill driver behind ``instlib reproduce``."""
