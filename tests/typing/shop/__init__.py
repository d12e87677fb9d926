"""Stands for the application package the README's examples import (tests/unit/test_typing.py)."""
