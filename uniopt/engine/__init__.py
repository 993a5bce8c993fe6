"""The execution engine: segment tables, blocks and the drivers that run rules."""
