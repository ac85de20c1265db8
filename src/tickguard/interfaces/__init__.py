"""What people touch: the CLI, the live view, reports and journal views. Nothing imports this package."""
