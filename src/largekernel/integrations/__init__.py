"""Bridges to other libraries (Ultralytics YOLO, timm); each imports its library lazily."""
