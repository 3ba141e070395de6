"""Holds the factories registered in timm (timm files each entry point under its defining module)."""

__all__: list[str] = []  # timm's register_model appends each registered name
