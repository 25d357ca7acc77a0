"""Benchmarks (not imported by sdlite itself): `python -m bench quality|speed|fetch-lpips`."""
