"""What the tap writes: records shaped from Stripe objects, through the one Singer writer,
and what a person watching the run sees (progress)."""
