"""Partially observable environments that measure memory, registered with gymnasium."""
