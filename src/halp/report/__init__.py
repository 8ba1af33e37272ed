"""The report layer: results naming, the published numbers, the tables and the figures."""
