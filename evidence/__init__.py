"""Evidence: multi-seed sweeps (semore-sweep) and the statistics a reviewer trusts (semore-report)."""
