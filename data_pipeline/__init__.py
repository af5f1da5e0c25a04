"""Where data enters FirstLight: readers, text normalisation, query splits, catalogue embedding."""
