"""Transforms of patches and batches: flips and rotations, band dropout, coarsening."""
