"""Readers that turn each real source distribution into SourceRecords and failure rows."""
