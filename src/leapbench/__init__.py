"""leapbench: Leap (Flennerhag et al., ICLR 2019), its baselines and benchmarks, behind one runner."""

__version__ = "0.1.0"
