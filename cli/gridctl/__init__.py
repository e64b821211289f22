"""gridctl: the GPU Grid Portal's command line, a client of its REST API only."""

__version__ = "0.1.0"
