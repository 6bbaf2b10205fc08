"""`python -m taxonomy.authorities ROOT... --db out/taxonomy/authorities.duckdb`: load the dumps under ROOT."""

from taxonomy.authorities.load import main

main()
