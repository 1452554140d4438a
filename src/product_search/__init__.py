"""product-search"""

__version__ = "0.1"
