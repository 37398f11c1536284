"""Samplers: batches homogeneous per source, spatial-block splits, prediction windows."""
