"""Scientific-name normalisation, authority loaders, the taxonomy resolver, common names and captions."""
