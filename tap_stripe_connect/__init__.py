"""tap-stripe-connect: a Singer tap for Stripe payments and billing data."""
