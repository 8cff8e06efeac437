"""The ``perplexity_by_length`` evaluate module (a package only so that every packaging setup ships it)."""
