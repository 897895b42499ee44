"""The package version, in one place (read by ``pinid --version`` and written into every manifest)."""

__version__ = "0.1.0"
