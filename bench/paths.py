"""Where the harness writes: results/ of the current directory (the repository root, when run as the
README says). Not next to the installed `bench` package, which may sit in site-packages."""
from pathlib import Path

RESULTS = Path.cwd() / "results"
