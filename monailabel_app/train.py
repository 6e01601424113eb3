"""`python -m monailabel_app.train`: the GRPO command line (`monailabel_app.training.cli`)."""

import sys

from monailabel_app.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
