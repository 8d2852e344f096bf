"""Readers of the supported on-disk dataset formats (one module per dataset family)."""
