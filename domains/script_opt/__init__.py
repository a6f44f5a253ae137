"""script_opt: autoresearch for any script that prints a metric (see domains/README.md)."""
