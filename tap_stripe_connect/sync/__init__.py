"""How streams are read: one module per sync mode, the windows of a listing, and the
scheduler of parallel work. Each mode is a function over one (account, stream) `Unit`."""
