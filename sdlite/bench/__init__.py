"""Benchmarks (not imported by sdlite itself): `python -m sdlite.bench quality|speed|fetch-lpips`."""
