"""The built-in demo cell: emulated devices animated like a small press line, run by the real daemon."""
