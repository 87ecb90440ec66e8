"""``python -m perforated.train``: SGD training from the command line (see :mod:`perforated.train.sgd`)."""
import sys

from .sgd import main

sys.exit(main())
