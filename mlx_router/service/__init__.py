"""Run mlx-router as an always-on user service: launchd agents (macOS) and systemd user units (Linux).

`mlx-router service install|uninstall|status` (cli.py); unit files are rendered by pure functions from a
ServiceSpec (spec.py, launchd.py, systemd.py) and applied by actions.execute.
"""
