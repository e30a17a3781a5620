from tap_stripe_connect.cli import main

main()
