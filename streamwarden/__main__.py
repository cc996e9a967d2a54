"""``python -m streamwarden`` is the ``streamwarden`` command."""

from streamwarden.cli import main

main()
