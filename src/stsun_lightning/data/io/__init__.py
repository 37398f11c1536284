"""Files, grids, open handles and band statistics: what every reader of rasters shares."""
