"""pivotbuild: a declarative, content-hashed build system."""

__version__ = "0.1.0"
