"""Curation of the Rare Species benchmark and the exclusion list that `tol build` honours."""
