#!/usr/bin/env bash
# Ultralytics for tests/integrations/test_yolo.py on a CPU-only torch, without torchvision.
# `pip install ultralytics` would pull torchvision (and with it a CUDA torch build); the PyPI
# torchvision wheel does not load against a CPU torch anyway. Ultralytics only reads torchvision's
# version at import (the test supplies that); train/val/predict need the real torchvision.
set -euo pipefail
pip install -q --no-deps ultralytics==8.4.190 ultralytics-thop==2.2.3  # both require torch/torchvision
pip install -q opencv-python-headless polars psutil pyyaml requests scipy matplotlib pillow  # the rest of Ultralytics' runtime deps
