r"""The plugin's training stages (each in its own subpackage: arguments, workflow, trainer)."""
