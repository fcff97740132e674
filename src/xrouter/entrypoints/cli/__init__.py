"""The `xrouter` command line: `main.py` parses and dispatches, one module per command group.

Every command builds what it needs through the same container as the HTTP app and never
imports the HTTP app; heavy parts are imported inside the command that needs them, so
`xrouter --version` and `xrouter serve` start fast.
"""
