"""The ``facetrust`` command line: thin commands over the library."""
