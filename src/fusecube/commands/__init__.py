"""CLI command groups, one module each; every module exposes ``register(app)``.

Add a module here and list it in ``fusecube.cli.COMMAND_MODULES``.
"""
