"""The ``passkey_retrieval`` evaluate module (a package only so that every packaging setup ships it)."""
