"""tap-stripe-connect: a Singer tap for Stripe payments and billing data."""

#: The release (pyproject.toml reads it; CHANGELOG.md says what each one changed).
__version__ = "0.1.0"
