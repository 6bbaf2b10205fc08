"""The dataset build: sources, downloads, image processing, shards, and the `tol` command line."""
