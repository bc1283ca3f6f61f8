"""``python -m nimask``: the ``nimask`` command."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="nimask")
