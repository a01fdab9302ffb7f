"""Studying runs: settings as data and recorded runs (lab), grids and sweeps, cocoercivity statistics and the
book's plots. Imports core, generation and applications; nothing in the library imports it."""
