"""Studio's version, in a module of its own so that every module can record it in
provenance without importing the package root (which would point the graph back up)."""

__version__ = "0.1.0"
