"""Side-by-side export benchmark: the real wandb SDK, the wire limit and run_pipeline, on
datasets from the sample generator served by the emulator.

    python -m run_pipeline_tests.benchmarks [--scenario NAME] [--quick]

Each contender runs in its own subprocess (peak RSS is per contender), N times; the table
quotes the median. Figures are printed, never asserted: this is a benchmark, not a test.
"""
