"""`python -m billing`: the `billing` command."""

from billing.cli import app

if __name__ == "__main__":
    app(prog_name="billing")
