"""``python -m pytei_ray JOB.py ...`` is ``python -m pytei_ray.launch JOB.py ...``."""

import sys

from pytei_ray.launch import main

sys.exit(main())
