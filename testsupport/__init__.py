"""Test support: the real services and server processes the test suite runs against."""
