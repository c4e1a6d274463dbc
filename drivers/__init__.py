"""Protocol drivers, installed as ``edged.drivers`` and registered through the ``edged.drivers`` entry points."""
