"""jitgate — a just-in-time access gateway for databases, servers and APIs."""

__version__ = "0.1.0"
