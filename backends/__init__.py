"""I/O adapters, one per array library, imported lazily by ``uniopt._adapter``.

Installed as ``uniopt.backends``. An adapter holds no update math: only where
gradients live, how parameters are written back, host transfers and compilation.
"""
