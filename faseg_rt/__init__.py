"""faseg_rt: fast, exact FA-Seg inference."""
__version__ = "0.1.0"
