"""Applications on top of the library: the ``ntkfast`` command line (:mod:`.cli`), the
demo (:mod:`.demo`) and the interactive page (:mod:`.web`, ``ntkfast serve``).  The
integrations with other libraries are top-level modules: :mod:`ntkfast.sklearn`,
:mod:`ntkfast.distributed` (Dask), :mod:`ntkfast.stax` (neural-tangents' API)."""

__all__: list = []  # the package has no API of its own: see its modules
