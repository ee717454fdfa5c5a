"""What every benchmark needs before it imports the project: the repository on ``sys.path``, the project's
settings and ``django.setup()``. A bench script imports it before any project module::

    from django_setup import ROOT  # the repository root; Django is set up

(scripts run as ``.venv/bin/python bench/NAME.py``, so this folder is on ``sys.path``).
``OMP_WAIT_POLICY=PASSIVE`` keeps torch's idle threads from spinning on the 2-core machines, where a
spinning pool costs the timed work its second core.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guardsite.settings")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import django  # noqa: E402

django.setup()
