import sys

from run_pipeline.cli import main

sys.exit(main())
