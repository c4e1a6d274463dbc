"""Compiled hot paths of edged (Cython): register codecs, process image, cycle thread, function blocks."""
