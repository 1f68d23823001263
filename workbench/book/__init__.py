"""The L2 order book and each venue's snapshot/delta sequencing."""
