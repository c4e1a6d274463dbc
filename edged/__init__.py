"""edged: an edge runtime daemon for smart manufacturing cells."""
from importlib import resources

__version__ = resources.files(__package__).joinpath("VERSION").read_text().strip()
