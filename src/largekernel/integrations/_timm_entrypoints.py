"""Holds the factories registered in timm (timm files each entry point under its defining module).

timm's ``register_model`` reads this module's ``default_cfgs`` (set from our pretrained-cfg
registry with timm's ``generate_default_cfgs`` just before registering) and appends each name
to ``__all__``.
"""

from typing import Any

__all__: list[str] = []  # timm's register_model appends each registered name
default_cfgs: dict[str, Any] = {}
